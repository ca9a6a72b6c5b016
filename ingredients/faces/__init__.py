"""The face stack: backends (registry: dlib, insightface), EVA-CLIP features, reference processing.

Modules are imported lazily by their users (importing this package loads nothing heavy):
base (Face, FaceAnalyzer), registry (build_analyzer), dlib_backend, insightface_backend, alignment,
facexlib_alignment (the reference's facexlib crop and BiSeNet parsing),
embedding (embed_detected_face), eva_clip (tiny / full towers), reference (process_references,
FaceConditioner, build_face_conditioner), image_io (load_rgb), errors.
"""
