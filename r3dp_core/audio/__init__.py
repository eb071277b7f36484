"""Audio front end of the audio-driven path.

``io`` (16 kHz conversion as the official ffmpeg step), ``hubert`` (HuBERT-large features), ``pitch`` (the
official Praat f0 and the model's pitch bins), ``blink`` (the periodic blink schedule) and ``motion``
(``audio_to_motion``: waveform → 25 fps expression coefficients in bounded memory).
"""
