"""The baseline a trained model is held against: 40 MFCCs' means and standard deviations per clip, and
logistic regression, its C chosen by cross-validation over the training speakers (speaker folds).

MFCCs from transformers' audio utilities (25 ms Hann windows every 10 ms, 40 Slaney mel bands from
20 Hz to 8 kHz, dB, orthonormal DCT-II), the classifier scikit-learn's. Scored like every system here
(evaluation.metrics): WA, UA and macro-F1 with 95% bootstrap intervals.
"""

import numpy as np
from scipy.fft import dct
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from ser_triton.core.audio import load_audio
from ser_triton.core.contract import LABELS, SAMPLE_RATE
from ser_triton.evaluation import metrics

COEFFICIENTS = 40
WINDOW, HOP, FFT = 400, 160, 512
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
FOLDS = 6

_MEL = mel_filter_bank(num_frequency_bins=FFT // 2 + 1, num_mel_filters=COEFFICIENTS, min_frequency=20.0,
                       max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")


def mfcc_statistics(audio: np.ndarray) -> np.ndarray:
    """[2 * COEFFICIENTS]: each MFCC's mean and standard deviation over the clip's frames."""
    log_mel = spectrogram(audio, window_function(WINDOW, "hann"), frame_length=WINDOW, hop_length=HOP,
                          fft_length=FFT, power=2.0, mel_filters=_MEL, log_mel="dB", db_range=80.0)
    coefficients = dct(log_mel, type=2, axis=0, norm="ortho")[:COEFFICIENTS]
    return np.concatenate([coefficients.mean(axis=1), coefficients.std(axis=1)])


def _classifier(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))


def baseline(train, test, resamples: int = metrics.RESAMPLES, seed: int = 0) -> dict:
    """`train`, `test`: lists of evaluation.datasets.Utterance. Scores on `test`, and the choice of C."""
    features = {id(u): mfcc_statistics(load_audio(u.path)) for u in [*train, *test]}
    x = np.stack([features[id(u)] for u in train])
    y = np.array([LABELS.index(u.label) for u in train])
    speakers = np.array([u.speaker for u in train])
    folds = GroupKFold(n_splits=min(FOLDS, len(set(speakers))))
    cross_validated = {}
    for c in C_GRID:
        recalls = []
        for fit, held in folds.split(x, y, speakers):
            predicted = _classifier(c).fit(x[fit], y[fit]).predict(x[held])
            recalls.append(float(metrics.accuracies(metrics.confusion_matrix(y[held], predicted))[1]))
        cross_validated[c] = float(np.mean(recalls))
    best = max(C_GRID, key=lambda c: (cross_validated[c], -c))
    model = _classifier(best).fit(x, y)
    predicted = model.predict(np.stack([features[id(u)] for u in test]))
    scores = metrics.classification_scores([u.label for u in test], [LABELS[i] for i in predicted], resamples, seed)
    return {"system": f"{COEFFICIENTS} MFCC means and standard deviations, logistic regression (balanced classes)",
            "c": best, "cross_validated_ua": {str(c): ua for c, ua in cross_validated.items()},
            "cross_validation": f"{folds.get_n_splits()} folds over the training speakers",
            **{key: scores[key] for key in ("wa", "wa_ci95", "ua", "ua_ci95", "macro_f1", "confusion")}}
