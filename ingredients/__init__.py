"""Ingredients (Fei et al., 2025): multi-identity personalized video generation on CogVideoX, in floors
(files < models < pipelines < faces < data < model_folder < training < sampling, plan; see README.md)."""
