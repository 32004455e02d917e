"""What strategy code may touch: the sandbox's allowlists and denylists, as data.

This module is deliberately import-light (no numpy/pandas/talib): the compiler checks imports and
attribute names against it statically, and `sandbox.proxies` / `sandbox.guards` enforce the same
tables at run time.

Shape of the policy
-------------------
* A module is importable only if its dotted name is a key of `MODULE_SURFACES` (or an alias in
  `MODULE_ALIASES`, or one of `API_MODULE_NAMES`). Strategy code never receives a real module:
  it receives a read-only proxy whose attributes are exactly the names of the module's surface.
  A surface entry that names another surface key is a nested proxy (``np.linalg``).
* Every attribute lookup on every other object goes through the attribute guard, which denies
  names starting with ``_`` and the introspection names in `DENIED_ATTRIBUTES` everywhere (also
  statically, at compile time), and on everything that is not an instance of a class the code
  defined: `LIBRARY_DENIED_ATTRIBUTES`, the writer/reader prefixes (`DENIED_ATTRIBUTE_PREFIXES`,
  except `ALLOWED_PREFIXED_ATTRIBUTES`) and the per-type names in `DENIED_ATTRIBUTES_BY_TYPE`.
  Values that come back are checked too: a real module becomes its proxy (or is refused), and
  frames, code objects, tracebacks, memoryviews, module namespaces, metaclasses and raw-buffer
  array classes are refused.
* Anything that is *not* listed in a surface is unreachable: the allowlist is the policy, the
  denylists below only name what must also be refused on objects (which have no surface).

Submodules exposed, and why each is safe
----------------------------------------
numpy.linalg, numpy.fft, numpy.emath
    Pure numerical routines over arrays; no I/O, no global state, no raw-memory constructors.
numpy.random
    Generator-based API (``default_rng(seed)``, ``Generator``, bit generators, ``SeedSequence``)
    and the legacy *drawing* functions. The legacy global-state setters (``seed``, ``set_state``,
    ``get_state``, ``set_bit_generator``) are not in the surface. Bit generators' ``ctypes`` /
    ``cffi`` / ``capsule`` attributes are denied by the attribute guard.
pandas.api, pandas.api.types
    ``pandas.api`` exposes only ``types``: dtype predicates and ``pandas_dtype``. The rest of
    ``pandas.api`` (``extensions`` registers accessors on global classes, ``interchange`` builds
    frames from foreign buffers, ``internals``) is not exposed.
pandas.offsets (also spelled pandas.tseries.offsets)
    Date-offset value classes (``BDay``, ``MonthEnd``, ...), used for resampling and shifting.
Not exposed, on purpose: numpy.lib (stride_tricks.as_strided, format = pickle I/O), numpy.core /
numpy._core, numpy.ctypeslib, numpy.f2py, numpy.distutils, numpy.testing, numpy.ma (dump/load
pickles), numpy.rec and numpy.char (constructors over raw buffers, rec.fromfile), numpy.matlib,
numpy.typing, pandas.io, pandas.core, pandas.compat, pandas.util, pandas.plotting,
pandas.testing, pandas.errors (not needed), talib.stream / talib._ta_lib, and
everything from math/statistics/datetime that is not a computation (``statistics.sys``,
``datetime.sys``, ``statistics.random`` ...).

Decisions worth knowing
-----------------------
* ``to_*`` on library objects: denied except the in-memory conversions in
  `ALLOWED_PREFIXED_ATTRIBUTES`. ``to_string`` and ``to_json`` are allowed only as wrapped
  methods that refuse a path/buffer argument (they return a str then); every other writer
  (``to_csv``, ``to_pickle``, ``to_parquet``, ``to_sql``, ``to_excel``, ``to_html``, ...) is denied.
* ``str.format`` / ``str.format_map`` are replaced by a formatter whose field lookups go through
  the attribute and item guards, so ``"{0.__class__}".format(x)`` is a SECURITY_VIOLATION while
  ``"{:.2f}".format(x)`` and ``"{0[close]}".format(row)`` work.
* ``np.errstate`` (scoped, restores itself) is allowed; ``np.seterr`` / ``seterrcall`` /
  ``set_printoptions`` / ``printoptions`` / ``setbufsize`` are not.
* Classes the code defines may derive only from other strategy classes, ``object`` and the
  builtin exception classes; numpy/pandas classes cannot be subclassed, ``type(name, bases,
  ns)`` is refused and ``type(x)`` never returns a metaclass.
* ``numpy.ndarray`` is a stand-in class (isinstance works) that refuses ``buffer=`` /
  ``offset=`` / ``strides=``: numpy lets those alias object pointers and read before a buffer.
  ``np.frombuffer``, ``np.void``, ``np.recarray``/``np.rec``/``np.char``/``np.matrix`` and
  ``ndarray.data`` (a memoryview) are unavailable for the same reason, ``ndarray.resize`` because
  ``refcheck=False`` frees memory that views still use.
* The real ``object`` builtin is available: everything dangerous about it is a private name, and
  pandas needs the real class for ``dtype=object``. ``super``, ``id``, ``memoryview``, ``open``,
  ``eval``/``exec``/``compile``, ``globals``/``locals``/``vars``, ``input``/``help``/``exit``/
  ``quit``/``breakpoint`` are bound to stand-ins whose call is a SECURITY_VIOLATION.
* Private names are refused without exception, also harmless ones: ``type(x).__name__`` is a
  SECURITY_VIOLATION (use ``isinstance``).
* pandas methods that look function names up (``apply``/``agg``/``aggregate``/``transform``/
  ``map``/``applymap``/``pipe``) check every string they get, nested in lists/tuples/dicts, against
  the attribute policy and the numpy surface: ``df.agg("to_pickle")`` or ``s.agg("save")`` is a
  SECURITY_VIOLATION. A column literally named like a refused name cannot appear in named
  aggregations either.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------------------------------------
# Importable modules
# ---------------------------------------------------------------------------------------------

#: Names under which the runtime's strategy API (signal, indicator, log, params, ...) can be
#: imported. Importing either returns a read-only proxy over the API mapping.
API_MODULE_NAMES: Final = frozenset({"strategy", "strategy_api"})

#: Names bound in every execution's globals before the code runs: name -> module path.
PREBOUND_MODULES: Final = {
    "np": "numpy",
    "pd": "pandas",
    "talib": "talib",
    "math": "math",
    "statistics": "statistics",
    "datetime": "datetime",
}

_NUMPY_UFUNCS = """
abs absolute acos acosh add arccos arccosh arcsin arcsinh arctan arctan2 arctanh asin asinh atan
atan2 atanh bitwise_and bitwise_count bitwise_invert bitwise_left_shift bitwise_not bitwise_or
bitwise_right_shift bitwise_xor cbrt ceil conj conjugate copysign cos cosh deg2rad degrees divide
divmod equal exp exp2 expm1 fabs float_power floor floor_divide fmax fmin fmod frexp gcd greater
greater_equal heaviside hypot invert isfinite isinf isnan isnat lcm ldexp left_shift less
less_equal log log10 log1p log2 logaddexp logaddexp2 logical_and logical_not logical_or
logical_xor matmul matvec maximum minimum mod modf multiply negative nextafter not_equal positive
pow power rad2deg radians reciprocal remainder right_shift rint sign signbit sin sinh spacing sqrt
square subtract tan tanh true_divide trunc vecdot vecmat
"""

# Array construction, manipulation, reductions and statistics. Deliberately absent: load, save,
# savez, savez_compressed, savetxt, loadtxt, genfromtxt, fromfile, fromregex, frombuffer (object
# arrays' pointers through an integer view), from_dlpack, memmap, DataSource, info, show_config,
# show_runtime, get_include, test, seterr, seterrcall, geterrcall, setbufsize, getbufsize,
# set_printoptions, get_printoptions, printoptions, bmat (evaluates names from the caller's
# frame), asmatrix/matrix/recarray/record/void/chararray (raw-buffer constructors), typecodes /
# sctypeDict / ScalarType (mutable or class-bearing tables).
_NUMPY_FUNCTIONS = """
all allclose amax amin angle any append apply_along_axis apply_over_axes arange argmax argmin
argpartition argsort argwhere around array array2string array_equal array_equiv array_repr
array_split array_str asanyarray asarray asarray_chkfinite ascontiguousarray asfortranarray
astype atleast_1d atleast_2d atleast_3d average bartlett base_repr binary_repr bincount blackman
block broadcast_arrays broadcast_shapes broadcast_to busday_count busday_offset can_cast choose
clip column_stack common_type compress concat concatenate convolve copy copyto corrcoef correlate
count_nonzero cov cross cumprod cumsum cumulative_prod cumulative_sum datetime_as_string
datetime_data delete diag diag_indices diag_indices_from diagflat diagonal diff digitize dot
dsplit dstack ediff1d einsum einsum_path empty empty_like expand_dims extract eye fill_diagonal
fix flatnonzero flip fliplr flipud format_float_positional format_float_scientific fromfunction
fromiter frompyfunc fromstring full full_like geomspace gradient hamming hanning histogram
histogram2d histogram_bin_edges histogramdd hsplit hstack i0 identity imag indices inner insert
interp intersect1d is_busday isclose iscomplex iscomplexobj isdtype isfortran isin isneginf
isposinf isreal isrealobj isscalar issubdtype iterable ix_ kaiser kron lexsort linspace logspace
mask_indices matrix_transpose max may_share_memory mean median meshgrid min min_scalar_type
mintypecode moveaxis nan_to_num nanargmax nanargmin nancumprod nancumsum nanmax nanmean
nanmedian nanmin nanpercentile nanprod nanquantile nanstd nansum nanvar ndim nested_iters nonzero
ones ones_like outer packbits pad partition percentile permute_dims piecewise place poly polyadd
polyder polydiv polyfit polyint polymul polysub polyval prod promote_types ptp put
put_along_axis putmask quantile ravel ravel_multi_index real real_if_close repeat require reshape
resize result_type roll rollaxis roots rot90 round row_stack searchsorted select setdiff1d
setxor1d shape shares_memory sinc size sort sort_complex split squeeze stack std sum swapaxes take
take_along_axis tensordot tile trace transpose trapezoid tri tril tril_indices tril_indices_from
trim_zeros triu triu_indices triu_indices_from typename union1d unique unique_all unique_counts
unique_inverse unique_values unpackbits unravel_index unstack unwrap vander var vdot vsplit vstack
where zeros zeros_like
"""

# Scalar/dtype classes and helper objects. `ndarray` is exposed as a stand-in class (isinstance
# works; constructing one with buffer/offset/strides is refused), see sandbox.proxies.
_NUMPY_CLASSES_AND_CONSTANTS = """
bool bool_ broadcast busdaycalendar byte bytes_ cdouble character clongdouble complex128
complex256 complex64 complexfloating csingle datetime64 double dtype errstate finfo flatiter
flexible float128 float16 float32 float64 floating generic half iinfo inexact int16 int32 int64
int8 int_ intc integer intp long longdouble longlong ndarray ndenumerate ndindex nditer number
object_ poly1d short signedinteger single str_ timedelta64 ubyte ufunc uint uint16 uint32 uint64
uint8 uintc uintp ulong ulonglong unsignedinteger ushort vectorize
False_ True_ little_endian e euler_gamma inf nan pi newaxis
c_ r_ s_ index_exp mgrid ogrid
linalg fft random emath
"""

_NUMPY_LINALG = """
LinAlgError cholesky cond cross det diagonal eig eigh eigvals eigvalsh inv lstsq matmul
matrix_norm matrix_power matrix_rank matrix_transpose multi_dot norm outer pinv qr slogdet solve
svd svdvals tensordot tensorinv tensorsolve trace vecdot vector_norm
"""

_NUMPY_FFT = """
fft fft2 fftfreq fftn fftshift hfft ifft ifft2 ifftn ifftshift ihfft irfft irfft2 irfftn rfft
rfft2 rfftfreq rfftn
"""

# Without: seed, set_state, get_state, set_bit_generator, get_bit_generator, bit_generator
# (module), mtrand (module), BitGenerator (abstract base), test.
_NUMPY_RANDOM = """
Generator MT19937 PCG64 PCG64DXSM Philox RandomState SFC64 SeedSequence default_rng
beta binomial bytes chisquare choice dirichlet exponential f gamma geometric gumbel
hypergeometric laplace logistic lognormal logseries multinomial multivariate_normal
negative_binomial noncentral_chisquare noncentral_f normal pareto permutation poisson power rand
randint randn random random_integers random_sample ranf rayleigh sample shuffle standard_cauchy
standard_exponential standard_gamma standard_normal standard_t triangular uniform vonmises wald
weibull zipf
"""

_NUMPY_EMATH = "arccos arcsin arctanh log log10 log2 logn power sqrt"

# Without: read_* (every reader), to_pickle, eval, set_option/get_option/reset_option/
# describe_option/option_context/options, show_versions, test, set_eng_float_format (global
# state), ExcelFile/ExcelWriter/HDFStore (files), io/core/compat/util/plotting/testing/errors/
# arrays/tseries internals, json_normalize (not needed), ArrowDtype (pyarrow), SparseDtype.
_PANDAS = """
DataFrame Series Index DatetimeIndex RangeIndex MultiIndex CategoricalIndex TimedeltaIndex
PeriodIndex IntervalIndex Timestamp Timedelta Period Interval NaT NA NamedAgg Categorical
CategoricalDtype DatetimeTZDtype PeriodDtype IntervalDtype BooleanDtype StringDtype Float32Dtype
Float64Dtype Int8Dtype Int16Dtype Int32Dtype Int64Dtype UInt8Dtype UInt16Dtype UInt32Dtype
UInt64Dtype DateOffset Grouper IndexSlice
concat merge merge_asof merge_ordered crosstab pivot pivot_table melt wide_to_long get_dummies
from_dummies cut qcut factorize unique isna isnull notna notnull to_datetime to_numeric
to_timedelta date_range bdate_range period_range timedelta_range interval_range infer_freq array
col
offsets api
"""

_PANDAS_API_TYPES = """
CategoricalDtype DatetimeTZDtype IntervalDtype PeriodDtype infer_dtype is_any_real_numeric_dtype
is_array_like is_bool is_bool_dtype is_categorical_dtype is_complex is_complex_dtype
is_datetime64_any_dtype is_datetime64_dtype is_datetime64_ns_dtype is_datetime64tz_dtype
is_dict_like is_dtype_equal is_extension_array_dtype is_float is_float_dtype is_hashable
is_int64_dtype is_integer is_integer_dtype is_interval_dtype is_iterator is_list_like
is_named_tuple is_number is_numeric_dtype is_object_dtype is_period_dtype is_re
is_re_compilable is_scalar is_signed_integer_dtype is_sparse is_string_dtype
is_timedelta64_dtype is_timedelta64_ns_dtype is_unsigned_integer_dtype pandas_dtype
union_categoricals
"""

_PANDAS_OFFSETS = """
BDay BHalfYearBegin BHalfYearEnd BMonthBegin BMonthEnd BQuarterBegin BQuarterEnd BYearBegin
BYearEnd BaseOffset BusinessDay BusinessHour BusinessMonthBegin BusinessMonthEnd CBMonthBegin
CBMonthEnd CDay CustomBusinessDay CustomBusinessHour CustomBusinessMonthBegin
CustomBusinessMonthEnd DateOffset Day Easter FY5253 FY5253Quarter HalfYearBegin HalfYearEnd Hour
LastWeekOfMonth Micro Milli Minute MonthBegin MonthEnd Nano QuarterBegin QuarterEnd Second
SemiMonthBegin SemiMonthEnd Tick Week WeekOfMonth YearBegin YearEnd
"""

# The indicator functions of TA-Lib 0.6+/ta-lib-python 0.8 (names missing from an installed
# version are skipped when proxies are built). Without: get_functions/get_function_groups (return
# the module's own mutable tables), set_compatibility/set_unstable_period (global state),
# abstract/stream/func (modules), InsufficientHistory is kept (an exception class).
_TALIB = """
AC ACCBANDS ACOS AD ADD ADOSC ADR ADX ADXR AO APO AROON AROONOSC ASIN ATAN ATR AVGDEV AVGPRICE
BBANDS BETA BOP CCI CDL2CROWS CDL3BLACKCROWS CDL3INSIDE CDL3LINESTRIKE CDL3OUTSIDE
CDL3STARSINSOUTH CDL3WHITESOLDIERS CDLABANDONEDBABY CDLADVANCEBLOCK CDLBELTHOLD CDLBREAKAWAY
CDLCLOSINGMARUBOZU CDLCONCEALBABYSWALL CDLCOUNTERATTACK CDLDARKCLOUDCOVER CDLDOJI CDLDOJISTAR
CDLDRAGONFLYDOJI CDLENGULFING CDLEVENINGDOJISTAR CDLEVENINGSTAR CDLGAPSIDESIDEWHITE
CDLGRAVESTONEDOJI CDLHAMMER CDLHANGINGMAN CDLHARAMI CDLHARAMICROSS CDLHIGHWAVE CDLHIKKAKE
CDLHIKKAKEMOD CDLHOMINGPIGEON CDLIDENTICAL3CROWS CDLINNECK CDLINVERTEDHAMMER CDLKICKING
CDLKICKINGBYLENGTH CDLLADDERBOTTOM CDLLONGLEGGEDDOJI CDLLONGLINE CDLMARUBOZU CDLMATCHINGLOW
CDLMATHOLD CDLMORNINGDOJISTAR CDLMORNINGSTAR CDLONNECK CDLPIERCING CDLRICKSHAWMAN
CDLRISEFALL3METHODS CDLSEPARATINGLINES CDLSHOOTINGSTAR CDLSHORTLINE CDLSPINNINGTOP
CDLSTALLEDPATTERN CDLSTICKSANDWICH CDLTAKURI CDLTASUKIGAP CDLTHRUSTING CDLTRISTAR
CDLUNIQUE3RIVER CDLUPSIDEGAP2CROWS CDLXSIDEGAP3METHODS CEIL CMF CMO CMOU COPPOCK CORREL COS COSH
CUMSUM CVI DEMA DIV DONCHIAN DPO DX EFI EMA ER ERI EXP FLOOR FOSC FRACTAL HA HMA HT_DCPERIOD
HT_DCPHASE HT_PHASOR HT_SINE HT_TRENDLINE HT_TRENDMODE IMI KAMA KC KDJ LINEARREG
LINEARREG_ANGLE LINEARREG_INTERCEPT LINEARREG_SLOPE LN LOG10 MA MACD MACDEXT MACDFIX MAMA
MARKETFI MASSI MAVP MAX MAXINDEX MEDPRICE MFI MIDPOINT MIDPRICE MIN MININDEX MINMAX MINMAXINDEX
MINUS_DI MINUS_DM MOM MULT NATR NVI OBV PERCENTILE PERCENTRANK PLUS_DI PLUS_DM PPO PVI PVO PVT
QSTICK RMA ROC ROCP ROCR ROCR100 RSI RVI RVOL SAR SAREXT SIN SINH SMA SMI SQRT STDDEV STOCH
STOCHF STOCHRSI SUB SUM SUPERTREND T3 TAN TANH TEMA TRANGE TRIMA TRIX TSF TSI TYPPRICE ULTOSC
VAR VHF VORTEX VWAP VWMA WAD WCLPRICE WILLR WMA ZLEMA
MA_Type InsufficientHistory
"""

# math is a pure C module of numeric functions and constants: all of it is safe.
_MATH = """
acos acosh asin asinh atan atan2 atanh cbrt ceil comb copysign cos cosh degrees dist e erf erfc
exp exp2 expm1 fabs factorial floor fmod frexp fsum gamma gcd hypot inf isclose isfinite isinf
isnan isqrt lcm ldexp lgamma log log10 log1p log2 modf nan nextafter perm pi pow prod radians
remainder sin sinh sqrt sumprod tan tanh tau trunc ulp fma
"""

# Without the module's own imports (sys, math, random, numbers, Counter, Decimal, Fraction,
# defaultdict, groupby, namedtuple, reduce, repeat, mul, bisect_*, erf, exp, fabs, fsum, hypot,
# log, sqrt, tau) and the LinearRegression namedtuple class.
_STATISTICS = """
NormalDist StatisticsError correlation covariance fmean geometric_mean harmonic_mean
linear_regression mean median median_grouped median_high median_low mode multimode pstdev
pvariance quantiles stdev variance kde kde_random
"""

# Without: sys, datetime_CAPI (a PyCapsule of C function pointers).
_DATETIME = "MAXYEAR MINYEAR UTC date datetime time timedelta timezone tzinfo"

# -- the standard library a strategy needs (issue 13). Modules whose real surface has a way
# around the guards are served from wrappers in sandbox/stdlib/ (see MODULE_REAL_NAMES and that
# package's docstring); tests/sandbox/test_stdlib.py attacks each through NATS.

# Without: abc (ABC.register mutates global registries), UserDict/UserList/UserString.
_COLLECTIONS = "ChainMap Counter OrderedDict defaultdict deque namedtuple"

_ITERTOOLS = """
accumulate batched chain combinations combinations_with_replacement compress count cycle dropwhile
filterfalse groupby islice pairwise permutations product repeat starmap takewhile tee zip_longest
"""

# sandbox.stdlib.safe_functools: without wraps/update_wrapper (copy attributes by any name),
# singledispatch/singledispatchmethod (evaluate string annotations), partialmethod.
_FUNCTOOLS = "cache cached_property cmp_to_key lru_cache partial reduce total_ordering"

# sandbox.stdlib.safe_operator: attrgetter/methodcaller/itemgetter/getitem/setitem/delitem go
# through the guards; without the in-place i* functions' dunder twins (__add__ ...).
_OPERATOR = """
abs add and_ attrgetter concat contains countOf delitem eq floordiv ge getitem gt index indexOf
inv invert is_ is_not itemgetter le lshift lt matmul methodcaller mod mul ne neg not_ or_ pos pow
rshift setitem sub truediv truth xor
"""

# Annotations and generic aliases. Without: get_type_hints (evaluates string annotations),
# ForwardRef, NamedTuple/TypedDict/Protocol/Generic (class factories with their own
# metaclasses), no_type_check/final/runtime_checkable (set attributes), TYPE_CHECKING.
_TYPING = """
Any Callable ClassVar Dict Final FrozenSet Iterable Iterator List Literal Mapping MutableMapping
MutableSequence NewType Optional Sequence Set Tuple Type TypeVar Union cast get_args get_origin
"""

# sandbox.stdlib.safe_dataclasses: the code's own classes only (asdict/astuple rebuilt without
# copy.deepcopy, which would reduce and rebuild arbitrary objects); without make_dataclass (any
# bases).
_DATACLASSES = """
FrozenInstanceError InitVar KW_ONLY MISSING asdict astuple dataclass field fields is_dataclass replace
"""

# sandbox.stdlib.safe_json.
_JSON = "JSONDecodeError dumps loads"

# sandbox.stdlib.safe_random: methods of one generator reseeded from OS entropy for every run;
# `Random(seed)` for a reproducible one. Without seed/getstate/setstate/SystemRandom.
_RANDOM = """
Random betavariate binomialvariate choice choices expovariate gammavariate gauss getrandbits
lognormvariate normalvariate paretovariate randbytes randint random randrange sample shuffle
triangular uniform vonmisesvariate weibullvariate
"""

_BISECT = "bisect bisect_left bisect_right insort insort_left insort_right"
_HEAPQ = "heapify heappop heappush heappushpop heapreplace merge nlargest nsmallest"

# Without getcontext/setcontext and the module-level DefaultContext/BasicContext/
# ExtendedContext (process-wide mutable contexts): `localcontext(prec=...)` scopes a change.
_DECIMAL = """
Clamped Context Decimal DecimalException DivisionByZero FloatOperation Inexact InvalidOperation
MAX_EMAX MAX_PREC MIN_EMIN MIN_ETINY Overflow ROUND_05UP ROUND_CEILING ROUND_DOWN ROUND_FLOOR
ROUND_HALF_DOWN ROUND_HALF_EVEN ROUND_HALF_UP ROUND_UP Rounded Subnormal Underflow localcontext
"""

_FRACTIONS = "Fraction"

# sandbox.stdlib.safe_enum: the functional API (`Enum("Side", ["BUY", "SELL"])`) without
# type=/module=/qualname=/boundary=; class statements cannot derive from Enum in the sandbox.
_ENUM = "Enum Flag IntEnum IntFlag StrEnum"

# sandbox.stdlib.safe_warnings: warn() is a line in the run's logs (so are library warnings).
# Without filterwarnings/simplefilter/catch_warnings (process-wide filter state).
_WARNINGS = "warn"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Importable module path -> the attribute names its proxy exposes.
MODULE_SURFACES: Final[dict[str, frozenset[str]]] = {
    "numpy": _words(_NUMPY_UFUNCS + _NUMPY_FUNCTIONS + _NUMPY_CLASSES_AND_CONSTANTS),
    "numpy.linalg": _words(_NUMPY_LINALG),
    "numpy.fft": _words(_NUMPY_FFT),
    "numpy.random": _words(_NUMPY_RANDOM),
    "numpy.emath": _words(_NUMPY_EMATH),
    "pandas": _words(_PANDAS),
    "pandas.api": frozenset({"types"}),
    "pandas.api.types": _words(_PANDAS_API_TYPES),
    "pandas.offsets": _words(_PANDAS_OFFSETS),
    "pandas.tseries": frozenset({"offsets"}),
    "talib": _words(_TALIB) | {"abstract"},
    "math": _words(_MATH),
    "statistics": _words(_STATISTICS),
    "datetime": _words(_DATETIME),
    "talib.abstract": _words(_TALIB) - {"MA_Type", "InsufficientHistory"} | {"Function"},
    "collections": _words(_COLLECTIONS),
    "itertools": _words(_ITERTOOLS),
    "functools": _words(_FUNCTOOLS),
    "operator": _words(_OPERATOR),
    "typing": _words(_TYPING),
    "dataclasses": _words(_DATACLASSES),
    "json": _words(_JSON),
    "random": _words(_RANDOM),
    "bisect": _words(_BISECT),
    "heapq": _words(_HEAPQ),
    "decimal": _words(_DECIMAL),
    "fractions": _words(_FRACTIONS),
    "warnings": _words(_WARNINGS),
    "enum": _words(_ENUM),
}

#: Extra import spellings -> the surface key they resolve to.
MODULE_ALIASES: Final[dict[str, str]] = {
    "pandas.tseries.offsets": "pandas.offsets",
}

#: Which real module backs each surface key (only where the dotted path is not the real one).
MODULE_REAL_NAMES: Final[dict[str, str]] = {
    "pandas.offsets": "pandas.tseries.offsets",
    "numpy.emath": "numpy.lib.scimath",
    "json": "sandbox.stdlib.safe_json",
    "random": "sandbox.stdlib.safe_random",
    "operator": "sandbox.stdlib.safe_operator",
    "functools": "sandbox.stdlib.safe_functools",
    "dataclasses": "sandbox.stdlib.safe_dataclasses",
    "warnings": "sandbox.stdlib.safe_warnings",
    "talib.abstract": "sandbox.stdlib.safe_talib_abstract",
    "enum": "sandbox.stdlib.safe_enum",
}

#: Names accepted by `import x` / `__import__("x")`.
IMPORTABLE_MODULES: Final = frozenset(MODULE_SURFACES) | frozenset(MODULE_ALIASES) | API_MODULE_NAMES


def resolve_module_path(name: str) -> str | None:
    """The surface key an import spelling names, or None when it is not importable."""
    if name in MODULE_SURFACES:
        return name
    return MODULE_ALIASES.get(name)


def module_exports(path: str, name: str) -> bool:
    """Whether `from <path> import <name>` names something the proxy of `path` exposes."""
    key = resolve_module_path(path)
    if key is None:
        return False
    return name in MODULE_SURFACES[key]


# ---------------------------------------------------------------------------------------------
# Attribute policy (objects that are not module proxies)
# ---------------------------------------------------------------------------------------------

#: Introspection handles that lead from a value to frames, code, globals, closures and raw
#: memory: denied on every object, statically (compile time) and at run time.
_INTROSPECTION = """
f_back f_builtins f_code f_globals f_locals f_trace f_generator tb_frame tb_next gi_frame gi_code
gi_yieldfrom cr_frame cr_code cr_await cr_origin ag_frame ag_code ag_await co_code func_globals
func_code func_closure func_dict func_defaults im_func im_self im_class mro ctypes cffi capsule
"""

#: Evaluators, file/pickle/raw-memory surfaces, plotting/styling (import arbitrary backends,
#: write files), global-state handles, and property setters (`Cls.prop.fset(obj, v)` would write
#: attributes of library objects past the write guard).
_DANGEROUS_METHODS = """
eval query
tofile dump dumps load loads save savez savez_compressed savetxt loadtxt genfromtxt fromfile
fromregex memmap DataSource ctypeslib f2py distutils
style plot hist boxplot plotting backend
options set_option get_option reset_option describe_option option_context
fset fdel
seterr seterrcall set_printoptions setbufsize set_state seed
to_csv to_pickle to_parquet to_sql to_clipboard to_excel to_html to_hdf to_feather to_orc
to_stata to_latex to_markdown to_xml to_gbq to_records to_iceberg to_xarray
"""

#: Module-like names that have no business as attributes of library objects.
_MODULE_NAMES = "os sys builtins importlib subprocess socket pickle shutil pathlib io"

#: Denied on every object, including the code's own classes, statically and at run time.
DENIED_ATTRIBUTES: Final = _words(_INTROSPECTION)

#: Denied at run time on every object that is not an instance of a class the code defined
#: (those may use ordinary names such as `self.seed` or `self.options`).
LIBRARY_DENIED_ATTRIBUTES: Final = DENIED_ATTRIBUTES | _words(_DANGEROUS_METHODS + _MODULE_NAMES)

#: Denied on library objects (numpy/pandas/talib values, classes and modules) unless listed in
#: ALLOWED_PREFIXED_ATTRIBUTES: writers (to_*) and readers (read_*). Not applied to the code's
#: own classes, where names like `to_buy` are ordinary.
DENIED_ATTRIBUTE_PREFIXES: Final = ("to_", "read_")

#: In-memory conversions that return new values and never touch a path or buffer.
ALLOWED_PREFIXED_ATTRIBUTES: Final = frozenset(
    {
        "to_numpy", "to_list", "to_dict", "to_frame", "to_series", "to_flat_index",
        "to_period", "to_timestamp", "to_pydatetime", "to_datetime64", "to_julian_date",
        "to_pytimedelta", "to_timedelta64", "to_offset",
        # module functions of pandas (the proxies list them explicitly anyway)
        "to_datetime", "to_numeric", "to_timedelta",
        # wrapped: allowed only without a path/buffer argument (return a str)
        "to_string", "to_json",
    }
)

#: Writers that are allowed only in their return-a-string form: name -> the parameters that
#: name a destination (positional index 0 is always the destination).
STRING_ONLY_WRITERS: Final = {
    "to_string": ("buf",),
    "to_json": ("path_or_buf",),
}

#: Extra names denied on numpy arrays: `resize` (refcheck=False frees memory views still use),
#: `data` (a memoryview over the array's raw bytes, including object pointers).
DENIED_ATTRIBUTES_BY_TYPE: Final = {
    "numpy.ndarray": frozenset({"resize", "data", "tofile", "dump", "dumps", "ctypes"}),
}

#: pandas methods that accept a function *name* and resolve it with getattr on the object (or
#: on numpy): their string arguments are checked against the attribute policy first.
STRING_DISPATCH_METHODS: Final = frozenset(
    {"apply", "agg", "aggregate", "transform", "map", "applymap", "pipe"}
)

# ---------------------------------------------------------------------------------------------
# Builtins
# ---------------------------------------------------------------------------------------------

#: Builtins available unchanged (value = the builtin of the same name). `object` is here on
#: purpose: everything dangerous about it (`__subclasses__`, `__setattr__`, `__reduce_ex__`, ...)
#: is a private name, refused statically and at run time, while `dtype=object`,
#: `class A(object)` and `isinstance(x, object)` are ordinary code pandas requires the real class
#: for.
PLAIN_BUILTINS: Final = frozenset(
    """
    None False True Ellipsis NotImplemented
    abs all any ascii bin bool callable chr complex divmod enumerate filter float format
    frozenset hash hex int isinstance issubclass iter len list map oct ord pow range repr
    reversed round set slice sorted str sum tuple zip classmethod staticmethod property bytes
    object
    """.split()
)

#: Builtin exception classes available to `raise` / `except` (and as base classes).
EXCEPTION_BUILTINS: Final = frozenset(
    """
    ArithmeticError AssertionError AttributeError BaseException BufferError BytesWarning
    DeprecationWarning EOFError EnvironmentError Exception FloatingPointError FutureWarning
    IOError ImportError ImportWarning IndentationError IndexError KeyError LookupError
    MemoryError NameError NotImplementedError OSError OverflowError PendingDeprecationWarning
    RecursionError ReferenceError RuntimeError RuntimeWarning StopIteration SyntaxError
    SyntaxWarning SystemError TabError TimeoutError TypeError UnboundLocalError
    UnicodeDecodeError UnicodeEncodeError UnicodeError UnicodeTranslateError UnicodeWarning
    UserWarning ValueError Warning ZeroDivisionError
    """.split()
)

#: Builtins replaced by guarded versions (sandbox.guards): getattr/hasattr/setattr/delattr go
#: through the attribute policy, type() is one-argument only, dir() hides denied names,
#: next/min/max check what they return, dict is the real dict.
GUARDED_BUILTINS: Final = frozenset(
    {"getattr", "hasattr", "setattr", "delattr", "type", "dir", "next", "min", "max", "dict"}
)

#: Builtins that exist only to fail with a SECURITY_VIOLATION naming themselves.
DENIED_BUILTINS: Final = frozenset(
    """
    open eval exec compile globals locals vars breakpoint input help exit quit super
    memoryview id copyright credits license
    """.split()
)
