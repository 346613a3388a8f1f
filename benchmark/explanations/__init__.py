"""fxbench.explanations"""
