"""What the dashboard and `reverie report` show: release history, metric trends, Compress, lineage."""
