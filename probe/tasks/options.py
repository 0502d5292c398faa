"""What each task option means, for `probe tasks NAME`: by option name, and by (task, option) where one name means
different things in different tasks. A test checks that every option of every task is described here."""

from __future__ import annotations

BY_NAME = {
    "n_train": "training examples (0: the whole training split)",
    "n_test": "test examples",
    "fresh": "draw a fresh training batch at every step (an unlimited stream) instead of a fixed training set",
    "data_seed": "seed of the data set itself (which examples, which split), apart from the run's --seed",
    "test_frac": "share of the examples held out as the test split",
    "data_dir": "folder holding the data files (nothing is downloaded)",
    "vocab": "vocabulary size (tokens are one-hot vectors of this length)",
    "length": "sequence length T",
    "num_samples": "examples the mnist1d generator makes (train and test together)",
    "augment_shift": "k > 0: roll each training input by a random shift in [-k, k] (circular)",
    "perm_seed": "seed of the fixed permutation of the 40 positions",
    "path": "the .npz file (given as the task name npz:PATH)",
    "size": "grid side: positions per axis",
    "xi0": "correlation length of class 0",
    "xi1": "correlation length of class 1",
    "gain": "gain g of erf(g z): the higher, the further from Gaussian the marginals",
    "periodic": "the grid wraps around",
    "clone": "gaussian: train and test on the class-conditional Gaussian clone (each class's mean and covariance "
             "from the training set; classification only); none: the real data",
    "test_length": "0: the test split has the training length T; > 0: this length instead (recurrent and "
                   "transformer models only)",
}

BY_TASK = {
    ("nlgp", "dim"): "grid dimensions (1: a line, 2: a square)",
    ("nlgp-gauss", "dim"): "grid dimensions (1: a line, 2: a square)",
    ("nlgp", "kurtosis"): "higher-order control at this gain's covariance: negative (erf, the NLGP: excess "
                          "kurtosis < 0), zero (its Gaussian clone), positive (sinh of a Gaussian field, heavy "
                          "tails: +1.5), elliptical (a Gaussian field times one random radius per example: "
                          "multivariate t, nu = 10)",
    ("icl-regression", "dim"): "input dimension of each (x, y) example",
    ("icl-regression", "context"): "examples in context before the query",
    ("icl-regression", "noise"): "standard deviation of the label noise",
    ("mqar", "pairs"): "key-value pairs before the queries",
    ("induction", "prefix"): "length of the prefix that is repeated",
    ("induction", "fixed_offset"): "0: the repeat starts at a random offset; > 0: always at this one (static routing)",
    ("modadd", "p"): "the modulus p (inputs a, b in 0..p-1)",
    ("modadd", "train_frac"): "share of all p^2 pairs used for training",
    ("parity", "n"): "input bits",
    ("parity", "k"): "bits whose XOR is the label",
    ("add", "D"): "inputs, of which two are relevant",
    ("add", "positions"): "the two relevant input positions, as \"a,b\"",
    ("add", "low"): "lower end of the training inputs' range",
    ("add", "high"): "upper end of the training inputs' range (the extrapolation split lies beyond it)",
    ("add", "noise"): "standard deviation of the label noise",
    ("add", "op"): "the rule: add, mul or max of the two relevant inputs",
    ("dyck", "max_depth"): "0: unbounded bracket depth; > 0: sequences never deeper than this",
    ("delayed-copy", "delay"): "d: the answer at position t is the token at t - d",
    ("patches", "size"): "patch side in pixels (size x size, or a row of size pixels with rows)",
    ("patches", "rows"): "1-D patches: a row of size pixels (geometry 1 x size) instead of a size x size square",
    ("patches", "n_train"): "training patches in the fixed set (any number: drawn at random positions)",
    ("patches", "augment_shift"): "k > 0: cut each training patch again at its corner moved by a random shift in "
                                  "[-k, k] per axis, clipped to its training block (real translations, no wrap-around)",
    ("patches", "block"): "side of the square blocks each image is tiled by; test_frac of them are the test region",
    ("patches", "test_frac"): "share of each image's blocks held out as its test region",
    ("patches", "data_dir"): "folder holding the images (default: scikit-image's data folder; nothing is downloaded)",
}


def option_help(task: str, option: str) -> str | None:
    """What ``option`` of ``task`` means, or None when it is not described."""
    return BY_TASK.get((task, option), BY_NAME.get(option))
