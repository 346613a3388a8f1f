"""fxbench.data"""
