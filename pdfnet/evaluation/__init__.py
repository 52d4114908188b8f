"""Scoring: the DIS metrics (``metrics``), scoring a folder of predictions (``folders``) and ``test.py``'s
predict-and-score of dataset splits (``testing``)."""
