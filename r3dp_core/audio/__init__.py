"""Audio front end of the audio-driven path.

``io`` (the clip as one ``Sound``, decoded once, and its 16 kHz view as the official ffmpeg step makes it),
``hubert`` (HuBERT-large features), ``pitch`` (the official Praat f0 and the model's pitch bins), ``energy`` (speech
energy and activity) and ``motion`` (``audio_to_motion``: waveform → 25 fps expression coefficients in bounded
memory). The blink schedule is not audio: it lives in ``geometry.blink``.
"""
