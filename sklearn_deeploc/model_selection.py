"""Comparing heads on pretrained DeepLoc features against fine-tuning, and transfer curves."""

import numbers
import time
import warnings
from functools import partial

import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, StratifiedKFold, check_cv
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC
from sklearn.utils import check_random_state

from .classifier import DeepLocClassifier, resolve_model
from .featurizer import DeepLocFeaturizer, FeatureCache
from .handcrafted import HandcraftedFeatures, _draw_per_class, make_classical_head
from .metrics import class_scores, mean_average_precision_scorer, per_class_average_precision
from .validation import PositiveInt, check_labels, check_positive_int

HEAD_DESCRIPTIONS = {
    "svm": "linear SVM (one-vs-one) on DeepLoc features",
    "knn": "k-nearest neighbours on DeepLoc features",
    "forest": "random forest on DeepLoc features",
    "finetune_fc": "DeepLoc fine-tuned, conv layers frozen",
    "finetune_all": "DeepLoc fine-tuned, every layer",
    "scratch": "DeepLoc trained from scratch",
    "classical": "CellProfiler-style features, ensemble of linear SVMs (ensLOC)",
}
HEADS = tuple(HEAD_DESCRIPTIONS)
FEATURE_HEADS = ("svm", "knn", "forest")
SCORING = {"accuracy": "accuracy", "average_precision": mean_average_precision_scorer}
PAPER_SIZES = (1, 3, 5, 10, 25, 50, 100, 250, 500)
KNN_NEIGHBOURS = 5


def _check_heads(heads):
    """``heads`` as a list of known, distinct head names (a single name is one head)."""
    heads = [heads] if isinstance(heads, str) else list(heads)
    if not heads or not set(heads) <= set(HEADS):
        raise ValueError(f"heads must be a non-empty subset of {HEADS}; got {heads}.")
    repeated = sorted({h for h in heads if heads.count(h) > 1})
    if repeated:
        raise ValueError(f"heads must name each head once; {repeated} repeats in {heads}.")
    return heads


def _check_cells(source, X, y, suffix=""):
    """Crops ``X{suffix}`` as ``source`` takes them, one label each (:func:`check_labels`)."""
    X = source.check_crops(X)
    classes, codes = check_labels(y, name=f"y{suffix}")
    if len(codes) != len(X):
        raise ValueError(
            f"y{suffix} has {len(codes)} labels but X{suffix} has {len(X)} cells; "
            "expected one label per cell."
        )
    return X, classes[codes]


def _check_sizes(sizes):
    """``sizes`` (one or more cells-per-class counts) as a list of positive ints."""
    sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
    if not sizes or not all(map(PositiveInt().is_satisfied_by, sizes)):
        raise ValueError(
            f"sizes must be positive integers (cells per class), one or more; got {sizes}."
        )
    return [int(s) for s in sizes]


def _candidates(source, X, heads, layer, network_params, random_state, verbose):
    """``{head: (features step, unfitted head)}``; the feature steps fitted, warmed on ``X``."""
    features = {}
    if any(h in FEATURE_HEADS for h in heads):
        features["deeploc"] = DeepLocFeaturizer(
            source, layer=layer, cache=FeatureCache(), verbose=verbose
        )
    if "classical" in heads:
        features["classical"] = HandcraftedFeatures(cache=FeatureCache())
    for name, step in features.items():
        step.fit(X).transform(X)  # fills the cache: folds and draws reuse it as it is
        features[name] = FrozenEstimator(step)
    architecture = source.architecture
    scratch = {key: tuple(architecture[key]) for key in ("conv_channels", "fc_units")}
    scratch["crop_size"] = architecture["crop_size"]
    network = {"random_state": random_state, **(network_params or {})}
    # The fine-tuned heads share the resolved model (clone keeps it by reference): read once.
    pretrained = {"pretrained": source, **network}
    deeploc = features.get("deeploc")
    return {
        # SVC is one-vs-one inside, as in the paper.
        "svm": (deeploc, SVC(kernel="linear")),
        "knn": (deeploc, KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS)),
        "forest": (deeploc, RandomForestClassifier(n_estimators=200, random_state=random_state)),
        "finetune_fc": ("passthrough", DeepLocClassifier(freeze="conv", **pretrained)),
        "finetune_all": ("passthrough", DeepLocClassifier(**pretrained)),
        "scratch": ("passthrough", DeepLocClassifier(**scratch, **network)),
        "classical": (features.get("classical"), make_classical_head(random_state)),
    }


def compare_heads(
    X,
    y,
    pretrained,
    *,
    heads=HEADS,
    layer="fc2",
    cv=3,
    network_params=None,
    scoring=None,
    n_jobs=None,
    random_state=0,
    verbose=0,
):
    """Cross-validate feature heads against fine-tuning in one ``GridSearchCV``.

    Each candidate is a :class:`~sklearn.pipeline.Pipeline` ``features -> head``
    (:data:`HEAD_DESCRIPTIONS`); all see the same folds, and each cell is featurised once.

    Parameters
    ----------
    X : array-like of shape (n, C, H, W) or flat DeepLoc layout
        Crops of the target screen.
    y : array-like of shape (n,)
        Labels, strings or numbers (one type), none missing.
    pretrained : str, path-like, DeepLocClassifier or DeepLocModel
        The pretrained model (folder, registered name, fitted classifier or model).
    heads : str or sequence of str, default=all seven
        Any of :data:`HEADS`, each at most once (:data:`HEAD_DESCRIPTIONS` says what each is).
        ``"knn"`` takes 5 neighbours, or every cell of the smallest training fold when it has fewer.
    layer : {"fc2", "fc1", "conv8"}, default="fc2"
        Feature layer for the feature heads.
    cv : int or cross-validation generator, default=3
        Folds (an int gives shuffled stratified folds seeded by ``random_state``).
    network_params : dict, optional
        Extra :class:`DeepLocClassifier` parameters of the network heads (``{"max_iter": 200}``).
    scoring : dict, optional
        Scorers; default accuracy and macro average precision.
    n_jobs : int, optional
        Parallel fits (joblib; works with the Dask backend).
    random_state : int, default=0
    verbose : int, default=0

    Returns
    -------
    search : GridSearchCV
        Fitted, refit on the best mean accuracy; ``head_names_`` names the head of each candidate,
        in ``cv_results_`` order (see :func:`fit_head`).
    table : pandas.DataFrame
        Columns ``head``, ``mean_<score>``, ``std_<score>``, ``mean_fit_time``; best head first.

    Examples
    --------
    >>> from sklearn_deeploc import DeepLocClassifier
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> from sklearn_deeploc.model_selection import compare_heads
    >>> X, y = make_yeast_cells(6, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> source = DeepLocClassifier(conv_channels=(4,) * 8, fc_units=(8, 8), max_iter=2,
    ...                            batch_size=8, random_state=0).fit(X, y)
    >>> search, table = compare_heads(X, y, source, heads=["svm", "knn"], cv=2)
    >>> table.columns[:3].tolist()
    ['head', 'mean_accuracy', 'std_accuracy']
    >>> sorted(table["head"])
    ['knn', 'svm']
    """
    heads = _check_heads(heads)
    source = resolve_model(pretrained)
    X, y = _check_cells(source, X, y)
    if isinstance(cv, numbers.Integral):
        cv = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    cv = check_cv(cv, y, classifier=True)
    candidates = _candidates(source, X, heads, layer, network_params, random_state, verbose)
    if "knn" in heads:  # k cannot exceed the smallest training fold
        with warnings.catch_warnings():  # GridSearchCV warns about the same folds
            warnings.simplefilter("ignore")
            smallest = min(len(train) for train, _ in cv.split(X, y))
        candidates["knn"][1].set_params(n_neighbors=min(KNN_NEIGHBOURS, smallest))
    grid = [{"features": [candidates[h][0]], "head": [candidates[h][1]]} for h in heads]
    pipe = Pipeline([("features", "passthrough"), ("head", candidates[heads[0]][1])])
    search = GridSearchCV(
        pipe,
        grid,
        scoring=scoring or SCORING,
        refit="accuracy",
        cv=cv,
        n_jobs=n_jobs,
        verbose=verbose,
        error_score="raise",
    ).fit(X, y)
    search.head_names_ = heads
    return search, _summary(search, heads)


def _summary(search, heads):
    """One row per head: mean and std of each score, mean fit time; best first."""
    results = pd.DataFrame(search.cv_results_)
    table = results.filter(regex="^(mean|std)_test_")  # mean then std of each score
    table.columns = table.columns.str.replace("_test_", "_")
    table.insert(0, "head", heads)
    table["mean_fit_time"] = results["mean_fit_time"]
    key = "mean_accuracy" if "mean_accuracy" in table else table.columns[1]
    return table.sort_values(key, ascending=False, kind="stable").reset_index(drop=True)


def transfer_curve(
    X_pool,
    y_pool,
    X_test,
    y_test,
    pretrained,
    *,
    sizes=PAPER_SIZES,
    n_draws=5,
    heads=("finetune_all", "scratch"),
    layer="fc2",
    network_params=None,
    scratch_params=None,
    random_state=0,
    verbose=0,
):
    """Accuracy against training-set size: transfer learning vs. training from scratch.

    The paper's protocol (Figs 4C, 5C): for each size, ``n_draws`` training sets of that many
    cells per class are drawn from the pool; each head is fitted on each, scored on the test set.

    Parameters
    ----------
    X_pool, y_pool : crops and labels to draw training sets from (as for :func:`compare_heads`).
    X_test, y_test : the fixed test set.
    pretrained : str, path-like, DeepLocClassifier or DeepLocModel
    sizes : int or sequence of int, default=(1, 3, 5, 10, 25, 50, 100, 250, 500)
        Cells per class, each at least 1. A class with fewer cells in the pool gives all it has
        (the ``n_train`` column says how many cells were used).
    n_draws : int, default=5
        Random training sets per size, at least 1.
    heads : sequence of str, default=("finetune_all", "scratch")
        Heads of :func:`compare_heads` (:data:`HEAD_DESCRIPTIONS`).
    layer : {"fc2", "fc1", "conv8"}, default="fc2"
        Feature layer for the feature heads.
    network_params : dict, optional
        :class:`DeepLocClassifier` parameters for all network heads.
    scratch_params : dict, optional
        Overrides for ``"scratch"`` (for example a longer ``max_iter``).
    random_state : int, default=0
    verbose : int, default=0
        Print one line per fit when > 0.

    Returns
    -------
    pandas.DataFrame
        Columns ``head``, ``cells_per_class``, ``draw``, ``n_train``, ``accuracy``, ``fit_time``;
        one row per head, size and draw.

    See Also
    --------
    sklearn_deeploc.plotting.plot_transfer_curve : draws the result.

    Examples
    --------
    >>> from sklearn_deeploc import DeepLocClassifier
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> from sklearn_deeploc.model_selection import transfer_curve
    >>> X, y = make_yeast_cells(4, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> source = DeepLocClassifier(conv_channels=(4,) * 8, fc_units=(8, 8), max_iter=2,
    ...                            batch_size=8, random_state=0).fit(X, y)
    >>> curve = transfer_curve(X, y, X, y, source, sizes=(1, 2), n_draws=2,
    ...                        network_params={"max_iter": 2, "batch_size": 8})
    >>> curve.groupby("head").size().to_dict()
    {'finetune_all': 4, 'scratch': 4}
    """
    heads = _check_heads(heads)
    sizes = _check_sizes(sizes)
    n_draws = check_positive_int(n_draws, "n_draws")
    source = resolve_model(pretrained)
    X_pool, y_pool = _check_cells(source, X_pool, y_pool, "_pool")
    X_test, y_test = _check_cells(source, X_test, y_test, "_test")
    # Test cells are scored at every size and draw: warm them; pool cells fill as drawn.
    candidates = _candidates(source, X_test, heads, layer, network_params, random_state, verbose)
    candidates["scratch"][1].set_params(**(scratch_params or {}))
    rng = check_random_state(random_state)
    rows = []
    for size in sizes:
        for draw in range(n_draws):
            train = _draw_per_class(y_pool, partial(min, size), rng)  # all of a smaller class
            for head in heads:
                features, estimator = candidates[head]
                model = Pipeline([("features", features), ("head", clone(estimator))])
                if head == "knn":  # k cannot exceed the training set
                    model.set_params(head__n_neighbors=min(KNN_NEIGHBOURS, len(train)))
                row = dict(head=head, cells_per_class=size, draw=draw, n_train=len(train))
                start = time.perf_counter()
                model.fit(X_pool[train], y_pool[train])
                row["accuracy"] = model.score(X_test, y_test)
                row["fit_time"] = time.perf_counter() - start
                rows.append(row)
                if verbose:
                    shown = {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in row.items()}
                    print(", ".join(f"{k}={v}" for k, v in shown.items()))
    return pd.DataFrame(rows)


def fit_head(search, head, X, y):
    """The pipeline of one head of a :func:`compare_heads` search, fitted on ``X, y``.

    Each call returns a new model (candidates are cloned, as ``GridSearchCV`` does); only the
    frozen featurizer and the pretrained network, which fitting never changes, are shared.

    Parameters
    ----------
    search : GridSearchCV
        As returned by :func:`compare_heads`.
    head : str
        One of ``search.head_names_``.
    X, y : crops and labels to fit on.

    Returns
    -------
    sklearn.pipeline.Pipeline

    Examples
    --------
    >>> from sklearn_deeploc import DeepLocClassifier
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> from sklearn_deeploc.model_selection import compare_heads, fit_head
    >>> X, y = make_yeast_cells(6, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> source = DeepLocClassifier(conv_channels=(4,) * 8, fc_units=(8, 8), max_iter=2,
    ...                            batch_size=8, random_state=0).fit(X, y)
    >>> search, _ = compare_heads(X, y, source, heads=["svm"], cv=2)
    >>> first, second = fit_head(search, "svm", X, y), fit_head(search, "svm", X[:8], y[:8])
    >>> first["head"] is second["head"]
    False
    """
    names = getattr(search, "head_names_", None)
    if names is None:
        raise ValueError(
            "search must be the GridSearchCV that compare_heads returns (with head_names_); "
            f"got {type(search).__name__}."
        )
    if head not in names:
        raise ValueError(f"head must be one of {names}; got {head!r}.")
    params = search.cv_results_["params"][names.index(head)]
    # The candidates in cv_results_ stay unfitted: fit clones, never them.
    return clone(search.estimator).set_params(**clone(params, safe=False)).fit(X, y)


def _average_precision(name, model, X, y):
    """Per-class AP of one model, refused unless its scores have one column per class."""
    final = model[-1] if isinstance(model, Pipeline) else model
    ovo = getattr(final, "decision_function_shape", None) == "ovo"
    if ovo and not hasattr(model, "predict_proba"):
        raise ValueError(
            f"Model {name!r} has decision_function_shape='ovo' scores: one column per pair "
            "of classes, not per class. Expected one column per class: use "
            "decision_function_shape='ovr' (SVC's default) or probability=True."
        )
    scores = class_scores(model, X)
    if scores.shape[1:] != (len(model.classes_),):
        raise ValueError(
            f"Model {name!r} gives scores of shape {scores.shape} for {len(model.classes_)} "
            "classes; expected one column per class."
        )
    return per_class_average_precision(y, scores, model.classes_)


def per_class_comparison(models, X_test, y_test):
    """Per-class average precision of fitted models on a test set (the paper's Fig 1D).

    Parameters
    ----------
    models : dict of str to fitted classifier
        For example the best DeepLoc head and the ``"classical"`` head (see :func:`fit_head`);
        cells are ranked by ``predict_proba``, else by ``decision_function``, which must give
        one column per class (not ``decision_function_shape="ovo"``).
    X_test, y_test : the test cells and their labels.

    Returns
    -------
    pandas.DataFrame
        One row per class, one column of average precision per model, and a last row ``"mean"``.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> from sklearn_deeploc.model_selection import per_class_comparison
    >>> X, y = [[0], [1], [2], [3]], ["a", "b", "a", "b"]
    >>> dummy = DummyClassifier().fit(X, y)
    >>> per_class_comparison({"dummy": dummy}, X, y).index.tolist()
    ['a', 'b', 'mean']
    """
    if not models:
        raise ValueError("models must name at least one fitted classifier; got none.")
    table = pd.DataFrame(
        {name: _average_precision(name, model, X_test, y_test) for name, model in models.items()}
    )
    table.loc["mean"] = table.mean()
    return table
