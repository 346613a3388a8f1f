"""fxbench.leaderboard"""
