"""fxbench.training"""
