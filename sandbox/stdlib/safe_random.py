"""`random` for strategies: one generator per process, reseeded from OS entropy for every run."""

from __future__ import annotations

import os
import random as _random

Random = _random.Random
_generator = _random.Random()


def reseed() -> None:
    """Called before each run: forked children would otherwise repeat the zygote's sequence."""
    _generator.seed(os.urandom(32))


betavariate = _generator.betavariate
if hasattr(_generator, "binomialvariate"):  # Python 3.12+
    binomialvariate = _generator.binomialvariate
choice = _generator.choice
choices = _generator.choices
expovariate = _generator.expovariate
gammavariate = _generator.gammavariate
gauss = _generator.gauss
getrandbits = _generator.getrandbits
lognormvariate = _generator.lognormvariate
normalvariate = _generator.normalvariate
paretovariate = _generator.paretovariate
randbytes = _generator.randbytes
randint = _generator.randint
random = _generator.random
randrange = _generator.randrange
sample = _generator.sample
shuffle = _generator.shuffle
triangular = _generator.triangular
uniform = _generator.uniform
vonmisesvariate = _generator.vonmisesvariate
weibullvariate = _generator.weibullvariate
