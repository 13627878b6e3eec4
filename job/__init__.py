"""ftjob: fine-tune BERT-family text classifiers, configured by environment variables."""

__version__ = "0.1.0"
