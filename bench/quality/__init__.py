"""`make quality`: the notebook recipe against the job's defaults, on the same rows of
offline corpora of different shapes; accuracy, macro-F1 and wall time over seeds."""
