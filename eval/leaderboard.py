"""Our numbers in the OpenS2V-Eval leaderboard's CSV layout (its `leaderboard/file_v1.1/results_*.csv`:
`Model,Venue,Evaluated by,TotalScore↑,Aesthetics↑,MotionSmoothness↑,MotionAmplitude↑,FaceSim↑,
GmeScore↑,NexusScore↑,NaturalScore↑`, values as percentages such as `51.46%`).

Only the column we compute in OpenS2V's own protocol and aggregation is filled: FaceSim↑ from
`face_sim_opens2v/R/faceless_as_0` (FaceSim-Cur with a faceless video counted as 0, as their script
averages; with backend R: comparable to theirs only with the CurricularFace backend). The other
columns need OpenS2V's models (aesthetic predictor, GME, NexusScore's detector, an MLLM judge) and are
left empty, never estimated; TotalScore↑ is their weighted sum of all of them, so it is empty too.
"""

from __future__ import annotations

import csv
import io

from eval.aggregate import split_by_k
from eval.metrics.face_sim_opens2v import NAME as OPENS2V_NAME
from eval.metrics.face_sim_opens2v import OPENS2V_AGGREGATION

COLUMNS = ("Model", "Venue", "Evaluated by", "TotalScore↑", "Aesthetics↑", "MotionSmoothness↑", "MotionAmplitude↑",
           "FaceSim↑", "GmeScore↑", "NexusScore↑", "NaturalScore↑")


def percent(value: float) -> str:
    """0.5146 -> '51.46%' (the leaderboard's format)."""
    return f"{100 * value:.2f}%"


def leaderboard_csv(metrics: dict, backend: str, evaluated_by: str = "this harness") -> str:
    """metrics.json's {method: {...}} as CSV text in the leaderboard's columns, one row per method
    (sorted); FaceSim↑ empty for a method without the OpenS2V-aggregated value."""
    key = f"{OPENS2V_NAME}/{backend}{OPENS2V_AGGREGATION}"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for method in sorted(metrics):
        overall, _ = split_by_k(metrics[method])
        row = dict.fromkeys(COLUMNS, "")
        row.update({"Model": method, "Evaluated by": f"{evaluated_by} (FaceSim: face backend {backend})"})
        if key in overall:
            row["FaceSim↑"] = percent(overall[key])
        writer.writerow([row[c] for c in COLUMNS])
    return buf.getvalue()
