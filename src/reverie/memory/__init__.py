"""Short-term memory: documents added by day, retrieved with citations, consolidated into the weights at night."""
