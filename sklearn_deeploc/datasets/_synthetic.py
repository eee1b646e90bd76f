"""A synthetic screen of yeast-like cells, for examples, tests and the demo.

Each crop holds one cell: a marker in channel 1 and a tagged protein in channel 0 whose pattern
names the class. The simulated camera (offset, photon and read noise, blur) is set by an imaging
style, so that a "source" and a differently imaged "target" screen can be generated for transfer.
"""

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.utils import check_random_state

from ..validation import check_positive_int, is_number

IMAGING_STYLES = {
    # An automated screen: low offset, bright cytosolic marker, sharp optics.
    "source": {
        "offset": 100.0,
        "photons": 400.0,
        "read_noise": 3.0,
        "blur": 0.7,
        "cell_radius": (10.0, 13.0),
        "marker": "cytosol",
        "marker_level": 1.0,
        "protein_level": 1.0,
        "expression_spread": 0.5,
    },
    # Another lab's screen: camera offset as in the Schuldiner set, dimmer and
    # noisier, softer focus, larger cells, and a rim-like marker (as brightfield).
    "target": {
        "offset": 33000.0,
        "photons": 150.0,
        "read_noise": 8.0,
        "blur": 1.3,
        "cell_radius": (11.0, 15.0),
        "marker": "rim",
        "marker_level": 0.6,
        "protein_level": 0.7,
        "expression_spread": 0.7,
    },
}


# What a camera can give: numeric style keys within these bounds, rim or cytosol markers.
STYLE_BOUNDS = {
    "offset": (0, 1e6),
    "photons": (1e-3, 1e4),
    "read_noise": (0, 1e4),
    "blur": (0, 100),
    "marker_level": (0, 100),
    "protein_level": (0, 100),
    "expression_spread": (0, 3),
}
MARKERS = ("cytosol", "rim")


def _unit(angle):
    """The (row, column) unit vector at ``angle``."""
    return np.array([np.sin(angle), np.cos(angle)])


def _ring(distance, radius, width):
    """A soft ring of ``width`` pixels along the boundary of an ellipse of ``radius``."""
    return np.exp(-0.5 * ((distance - 1.0) * radius / width) ** 2)


def _spots(cell, points, sigma):
    """Gaussian spots of ``sigma`` pixels at ``points`` of the cell's crop."""
    image = np.zeros_like(cell.yy)
    for py, px in points:
        image += np.exp(-((cell.yy - py) ** 2 + (cell.xx - px) ** 2) / (2 * sigma**2))
    return image


def _points_in(cell, mask, counts, rng):
    """Random pixel positions in ``mask``, as many as drawn from ``counts`` (none if empty)."""
    count = int(rng.integers(*counts))
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return []
    picks = rng.integers(0, rows.size, count)
    return list(zip(cell.yy[rows[picks], cols[picks]], cell.xx[rows[picks], cols[picks]]))


class _Cell:
    """Geometry of one synthetic cell: mother, optional bud, nucleus, vacuole."""

    def __init__(self, rng, size, radius_range, budded, centre):
        self.yy, self.xx = np.mgrid[0:size, 0:size].astype(np.float64)
        self.radius = rng.uniform(*radius_range)
        self.angle = rng.uniform(0, 2 * np.pi)
        aspect = rng.uniform(0.8, 1.0)
        self.mother = self.distance(centre, self.radius * aspect, self.radius, self.angle)
        self.body = self.mother < 1
        self.bud = None
        direction = _unit(self.angle)
        if budded:
            self.bud_radius = bud_radius = self.radius * rng.uniform(0.35, 0.7)
            self.neck = centre + direction * self.radius * 0.97
            self.bud_centre = self.neck + direction * bud_radius * 0.9
            self.bud_tip = self.bud_centre + direction * bud_radius * 0.95
            self.bud = self.distance(self.bud_centre, bud_radius, bud_radius, self.angle)
            self.body = self.body | (self.bud < 1)
        offset = _unit(rng.uniform(0, 2 * np.pi)) * self.radius * 0.35
        self.nucleus_radius = self.radius * rng.uniform(0.28, 0.36)
        self.nucleus_centre = centre + offset
        self.nucleus = self.distance(self.nucleus_centre, self.nucleus_radius, self.nucleus_radius)
        self.vacuole_radius = self.radius * rng.uniform(0.32, 0.45)
        vacuole_centre = centre - offset * 1.1
        self.vacuole = self.distance(vacuole_centre, self.vacuole_radius, self.vacuole_radius)
        self.cytoplasm = self.body & (self.nucleus > 1.1) & (self.vacuole > 1.1)

    def distance(self, centre, ry, rx, angle=0):
        """Normalised distance to an ellipse's centre: < 1 inside, 1 on its boundary."""
        dy, dx = self.yy - centre[0], self.xx - centre[1]
        cos, sin = np.cos(angle), np.sin(angle)
        u = dx * cos + dy * sin
        v = -dx * sin + dy * cos
        return np.sqrt((u / rx) ** 2 + (v / ry) ** 2)

    def outline(self, width=1.2):
        """A soft ring of ``width`` pixels along the cell's (mother and bud) boundary."""
        ring = _ring(self.mother, self.radius, width)
        if self.bud is None:
            return ring
        bud_ring = _ring(self.bud, self.bud_radius, width)
        return np.maximum(ring * (self.bud > 1), bud_ring * (self.mother > 1))


def _cytoplasm(cell, rng):
    return cell.body * (1 - 0.7 * (cell.vacuole < 1) - 0.4 * (cell.nucleus < 1))


def _nucleolus(cell, rng):
    side = rng.uniform(0, 2 * np.pi)
    spot = cell.nucleus_centre + _unit(side) * cell.nucleus_radius * 0.55
    radii = cell.nucleus_radius * 0.55, cell.nucleus_radius * 0.8
    return cell.distance(spot, *radii, side) < 1


def _er(cell, rng):
    cortical = cell.outline(0.8) * rng.uniform(0.4, 1.0, cell.yy.shape) ** 0.5
    return 0.8 * cortical + 0.7 * _ring(cell.nucleus, cell.nucleus_radius, 0.8)


def _mitochondria(cell, rng):
    points = []
    for start in _points_in(cell, cell.cytoplasm, (3, 6), rng):
        position, heading = np.array(start), rng.uniform(0, 2 * np.pi)
        for _ in range(8):
            heading += rng.normal(0, 0.5)
            position = position + _unit(heading)
            points.append(position)
    return _spots(cell, points, 0.8) * cell.body


def _bud_neck(cell, rng):
    across = cell.angle + np.pi / 2
    return cell.distance(cell.neck, 3.5, 1.0, across + np.pi / 2) < 1.2


def _punctate(cell, rng, counts=(2, 7), sigma=0.9):
    return _spots(cell, _points_in(cell, cell.cytoplasm, counts, rng), sigma)


def _endosome(cell, rng):
    near_vacuole = (cell.vacuole > 1.05) & (cell.vacuole < 1.6) & cell.body
    return _spots(cell, _points_in(cell, near_vacuole, (2, 5), rng), 1.0)


def _actin(cell, rng):
    region = cell.body & (cell.outline(1.5) > 0.3)
    if cell.bud is not None:
        region |= cell.bud < 1
    return _spots(cell, _points_in(cell, region, (8, 16), rng), 0.7)


def _spindle_pole(cell, rng):
    pole = cell.nucleus_centre + _unit(rng.uniform(0, 2 * np.pi)) * cell.nucleus_radius
    points = [pole] + ([2 * cell.nucleus_centre - pole] if rng.random() < 0.5 else [])
    return _spots(cell, points, 0.8)


def _spindle(cell, rng):
    direction = _unit(rng.uniform(0, 2 * np.pi))
    steps = np.linspace(-1.4, 1.4, 12)[:, None] * cell.nucleus_radius
    return 0.7 * _spots(cell, cell.nucleus_centre + steps * direction, 0.7)


# Names follow the classes of the paper's Chong et al. (2015) training set; each pattern maps a
# cell (and the random generator) to the protein's image.
LOCALIZATIONS = {
    "ACTIN": _actin,
    "BUDNECK": _bud_neck,
    "BUDTIP": lambda cell, rng: _spots(cell, [cell.bud_tip], 1.3),
    "CELLPERIPHERY": lambda cell, rng: cell.outline(1.0),
    "CYTOPLASM": _cytoplasm,
    "ENDOSOME": _endosome,
    "ER": _er,
    "GOLGI": lambda cell, rng: 0.6 * _punctate(cell, rng, (5, 11), 1.1),
    "MITOCHONDRIA": _mitochondria,
    "NUCLEARPERIPHERY": lambda cell, rng: _ring(cell.nucleus, cell.nucleus_radius, 0.9),
    "NUCLEI": lambda cell, rng: cell.nucleus < 1,
    "NUCLEOLUS": _nucleolus,
    "PEROXISOME": _punctate,
    "SPINDLE": _spindle,
    "SPINDLEPOLE": _spindle_pole,
    "VACUOLARMEMBRANE": lambda cell, rng: _ring(cell.vacuole, cell.vacuole_radius, 0.9),
    "VACUOLE": lambda cell, rng: cell.vacuole < 1,
}
_NEEDS_BUD = {"BUDNECK", "BUDTIP"}


def _resolve_style(style):
    """The full settings of a style name or of a dict of overrides."""
    if isinstance(style, str):
        if style not in IMAGING_STYLES:
            raise ValueError(
                f"style must be one of {sorted(IMAGING_STYLES)} or a dict; got {style!r}."
            )
        return dict(IMAGING_STYLES[style])
    if not isinstance(style, dict):
        raise TypeError(f"style must be a style name or a dict; got {type(style).__name__}.")
    unknown = set(style) - set(IMAGING_STYLES["source"])
    if unknown:
        raise ValueError(
            f"Unknown style keys {sorted(unknown)}; known: {sorted(IMAGING_STYLES['source'])}."
        )
    for key, value in style.items():
        if expected := _style_problem(key, value):
            raise ValueError(f"style[{key!r}] must be {expected}; got {value!r}.")
    return {**IMAGING_STYLES["source"], **style}


def _style_problem(key, value):
    """What ``style[key]`` must be, where ``value`` is not that; else None."""
    if key == "marker":
        return None if value in MARKERS else f"one of {MARKERS}"
    if key == "cell_radius":
        pair = isinstance(value, (tuple, list)) and len(value) == 2
        if pair and all(is_number(r, 1, 1e3) for r in value) and value[0] <= value[1]:
            return None
        return "two radii (low, high) in pixels, 1 <= low <= high <= 1000"
    low, high = STYLE_BOUNDS[key]
    return None if is_number(value, low, high) else f"a number in [{low:g}, {high:g}]"


def _render(cell, label, style, rng):
    """Noise-free marker and protein images (photon rates, arbitrary units)."""
    if style["marker"] == "cytosol":
        marker = cell.body * (1 - 0.6 * (cell.vacuole < 1))
    else:
        marker = 0.3 * cell.body + cell.outline(1.3)
    expression = style["protein_level"] * rng.lognormal(0.0, style["expression_spread"])
    pattern = np.asarray(LOCALIZATIONS[label](cell, rng), dtype=float)
    protein = expression * (pattern / max(pattern.max(), 1e-6) + 0.04 * cell.body)
    return np.stack([protein, style["marker_level"] * marker])


def make_yeast_cells(
    n_per_class,
    classes=None,
    *,
    image_size=64,
    style="source",
    bud_fraction=0.6,
    shuffle=True,
    random_state=None,
):
    """Generate a synthetic screen of single yeast-like cells.

    Each cell is an ellipse of random size, aspect and orientation with a nucleus and a
    vacuole, among up to three neighbours cut by the crop's edge; the protein's pattern gives
    the class. The camera gives raw counts, which need
    :func:`~sklearn_deeploc.preprocessing.percentile_stretch`.

    Parameters
    ----------
    n_per_class : int
        Cells per class (the output is balanced).
    classes : list of str, optional
        A subset of :data:`LOCALIZATIONS` (17 of the paper's classes); all of them when None.
    image_size : int, default=64
        Side of the square crops.
    style : {"source", "target"} or dict, default="source"
        A name from :data:`IMAGING_STYLES`, or a dict overriding some "source" keys
        (``marker`` is "cytosol" or "rim").
    bud_fraction : float, default=0.6
        Fraction of budded cells (bud neck and bud tip cells are always budded).
    shuffle : bool, default=True
        Shuffle the cells; otherwise they come grouped by class.
    random_state : int, RandomState instance or None, default=None
        Seed for reproducible screens.

    Returns
    -------
    X : ndarray of shape (n_per_class * n_classes, 2, image_size, image_size), float32
        Raw camera counts; channel 0 protein, channel 1 marker.
    y : ndarray of shape (n_per_class * n_classes,), object
        Class names.

    Examples
    --------
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> X, y = make_yeast_cells(2, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> X.shape, sorted(y)
    ((4, 2, 64, 64), ['NUCLEI', 'NUCLEI', 'VACUOLE', 'VACUOLE'])
    """
    n_per_class = check_positive_int(n_per_class, "n_per_class")
    image_size = check_positive_int(image_size, "image_size")
    if not is_number(bud_fraction, 0, 1):
        raise ValueError(f"bud_fraction must be a fraction in [0, 1]; got {bud_fraction!r}.")
    if isinstance(classes, str):
        raise TypeError(f"classes must be a list of class names; got the string {classes!r}.")
    classes = list(LOCALIZATIONS) if classes is None else list(classes)
    unknown = [c for c in classes if c not in LOCALIZATIONS]
    if unknown or not classes:
        raise ValueError(f"Unknown classes {unknown}; known: {list(LOCALIZATIONS)}.")
    settings = _resolve_style(style)
    rng = np.random.default_rng(check_random_state(random_state).randint(2**32))
    labels = np.repeat(np.asarray(classes, dtype=object), n_per_class)
    if shuffle:
        labels = labels[rng.permutation(labels.size)]
    X = np.empty((labels.size, 2, image_size, image_size), np.float32)
    blur = (0, settings["blur"], settings["blur"])
    for i, label in enumerate(labels):
        image = _field(label, image_size, settings, bud_fraction, rng)
        photons = rng.poisson(np.clip(gaussian_filter(image, blur), 0, None) * settings["photons"])
        X[i] = photons + settings["offset"] + rng.normal(0, settings["read_noise"], image.shape)
    return X, labels


def _field(label, size, style, bud_fraction, rng):
    """A crop's noise-free image: its cell and neighbours of the same strain (as in a well)."""
    middle = size / 2 - 0.5
    image = 0.0
    centres = [middle + rng.uniform(-2, 2, 2)]
    for _ in range(int(rng.integers(0, 4))):
        centres.append(middle + _unit(rng.uniform(0, 2 * np.pi)) * rng.uniform(30, 38))
    for centre in centres:
        budded = label in _NEEDS_BUD or rng.random() < bud_fraction
        cell = _Cell(rng, size, style["cell_radius"], budded, centre)
        image = np.maximum(image, _render(cell, label, style, rng))
    return image
