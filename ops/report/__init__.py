"""Reports: the HTML report of an evaluation and the summary of a pipeline run."""
