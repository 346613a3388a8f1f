"""fxbench.robustness"""
