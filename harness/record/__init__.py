"""What a run leaves behind: result rows (Parquet), the run folder's layout, and the leaderboard."""
