"""The model folder: a diffusers pipeline folder plus `face_encoder/` (`folder`), the tiny model
built offline (`tiny`), and the prepare stage that builds or assembles it (`prepare`)."""
