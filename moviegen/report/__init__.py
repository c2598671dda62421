"""Report stage: the run's records read back, and the HTML page and Markdown summary made from them."""
