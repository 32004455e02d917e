# Script style: top-level code over `df`, emitting signals and indicators through the API.
import talib

rsi = talib.RSI(df["close"].to_numpy(), timeperiod=14)
indicator("rsi_14", rsi)
last = rsi[-1]
if last < 30:
    signal("BUY", f"RSI {last:.1f} is oversold")
elif last > 70:
    signal("SELL", f"RSI {last:.1f} is overbought")
else:
    signal("HOLD", f"RSI {last:.1f} is neutral")
log("bars seen:", len(df))
