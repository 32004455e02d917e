"""`np.matrix` is not available in strategies by any route, through NATS as a client sends it.

The class itself is refused; `np.r_` / `np.c_` with a "r" or "c" directive build one anyway, so
any ndarray subclass instance a guard sees (item, attribute, iteration) is refused too.
"""

from __future__ import annotations

import pytest

from contracts import subjects
from tests.support import columnar_bars, request_json

ROUTES = {
    "np.matrix": "import numpy as np\nm = np.matrix([[1, 2]])\n",
    "np.r_ row directive": "import numpy as np\nm = np.r_['r', [1, 2], [3, 4]]\n",
    "np.r_ column directive": "import numpy as np\nm = np.r_['c', [1, 2], [3, 4]]\n",
    "np.c_ row directive": "import numpy as np\nm = np.c_['r', [1, 2], [3, 4]]\n",
    "np.r_.makemat": "import numpy as np\nm = np.r_.makemat([[1, 2]])\n",
    "type of a row-directive result": "import numpy as np\nt = type(np.r_['r', [1, 2]])\n",
    "inside a lambda": "import numpy as np\nf = lambda: np.r_['r', [1]]\nm = f()\n",
    "in a strategy function": ("import numpy as np\ndef strategy(data):\n"
                               "    m = np.r_['r', data['close'].to_numpy()]\n    return 'HOLD'\n"),
}


@pytest.mark.parametrize("name", sorted(ROUTES))
async def test_np_matrix_is_unreachable_by(nc, name):
    reply = await request_json(nc, subjects.EXECUTE, {"code": ROUTES[name], "bars": columnar_bars(20)})
    assert reply["success"] is False
    assert reply["error"]["code"] == "SECURITY_VIOLATION", reply["error"]


async def test_plain_concatenation_with_r_and_c_still_works(nc):
    code = ("import numpy as np\nresult = {'r': np.r_[[1, 2], [3]].tolist(), "
            "'c': np.c_[[1, 2], [3, 4]].tolist(), 'axis': np.r_['0,2', [1, 2], [3, 4]].tolist()}\n")
    reply = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": columnar_bars(20)})
    assert reply["success"] is True, reply["error"]
    assert reply["result"] == {"r": [1, 2, 3], "c": [[1, 3], [2, 4]], "axis": [[1, 2], [3, 4]]}
