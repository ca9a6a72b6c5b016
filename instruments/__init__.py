"""Instruments: what no DVC stage runs. Speed and memory measurements (`instruments.speed`), the load
measurement, the full profile's rehearsal weights tree and the ONNX stand-ins it writes, the photo
cases (a case file of packaged photos, `instruments.photo_cases`), the compute-engine benchmark. They
sit above `ingredients` and `eval` (they may import both; nothing there imports them), so editing one
reruns no stage.
"""
