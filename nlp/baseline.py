"""The linear baseline of the benchmark: TF-IDF features + logistic regression (scikit-learn)."""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

from .data import TextTask


def tfidf_logreg(train: TextTask, test: TextTask, *, max_features: int = 200_000, C: float = 10.0) -> dict[str, Any]:
    """Test accuracy of TF-IDF (word uni- and bigrams, sublinear tf) + multinomial logistic regression,
    and of always predicting the training set's most frequent class."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=max_features)
    x_train = vectorizer.fit_transform(train.texts)
    clf = LogisticRegression(C=C, max_iter=1000)
    clf.fit(x_train, train.labels)
    pred = clf.predict(vectorizer.transform(test.texts))
    accuracy = sum(int(p == y) for p, y in zip(pred, test.labels)) / len(test)
    majority = Counter(train.labels).most_common(1)[0][0]
    return {"tfidf_logreg_test_accuracy": accuracy,
            "majority_class": train.classes[majority],
            "majority_test_accuracy": sum(int(y == majority) for y in test.labels) / len(test),
            "train_examples": len(train), "test_examples": len(test), "C": C,
            "seconds": round(time.perf_counter() - t0, 1)}
