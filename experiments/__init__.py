"""The top floor: code that sees every stage. The params schema over all sections (`params`), the
MLflow logging step of DVC stages (`mlflow_stage`, `mlflow_eval`) and the ablations run as DVC
experiments (`ablations`, with the override files beside it)."""
