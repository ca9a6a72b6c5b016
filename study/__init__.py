"""The study as a whole: code that sees every stage. The params schema over all sections (`params`)
and the MLflow logging step each DVC stage ends with (`mlflow_stage`, `mlflow_eval`)."""
