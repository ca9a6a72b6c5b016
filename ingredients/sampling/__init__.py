"""Sampling: benchmark case files (`benchmark`) and the sampling stage, benchmark x methods -> videos
(`sample`)."""
