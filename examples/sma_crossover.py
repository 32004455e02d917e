"""SMA crossover: BUY when the fast average crosses above the slow one, SELL when it crosses below."""
import numpy as np


def strategy(data):
    fast = data["close"].rolling(params.get("fast", 10)).mean()
    slow = data["close"].rolling(params.get("slow", 30)).mean()
    indicator("sma_fast", fast)
    indicator("sma_slow", slow)
    above = fast > slow
    was_above = above.shift(1, fill_value=False)
    return np.where(above & ~was_above, "BUY", np.where(~above & was_above, "SELL", "HOLD"))
