"""Raw-data style over reference data: a technology or energy stock passes when it is cheap
(P/E under 30), beat its last earnings estimate, and outran the S&P 500 (SPY) over 90 days.

    strategy-node refdata load examples/refdata/securities.csv --kind securities
    strategy-node refdata load examples/refdata/fundamentals.csv --kind fundamentals
    strategy-node refdata load examples/refdata/earnings.json --kind earnings
    strategy-node refdata load examples/refdata/indices.csv --kind indices
    strategy-node bars load examples/refdata/bars_AAPL.csv --symbol AAPL --timeframe 1d   (also MSFT, XOM)
    strategy-node screen examples/classify_quality.py --symbols AAPL MSFT XOM
"""


def classify_symbol(symbol):
    info = get_security_info(symbol)
    if info["sector"] not in ("Technology", "Energy"):
        return False
    pe = get_fundamental_data(symbol, ["pe_ratio"])["pe_ratio"]
    last = get_earnings_data(symbol, quarters=1)
    surprise = last["eps_surprise_pct"].iloc[-1]
    spy = get_market_indices(["SPY"], days=90)["SPY"]["close"]
    mine = get_price_data(symbol, "1d", days=90)["close"]
    excess = (mine.iloc[-1] / mine.iloc[0]) - (spy.iloc[-1] / spy.iloc[0])
    log(f"{info['name']}: P/E {pe:.1f}, EPS surprise {surprise:+.1f}%, 90-day excess return {excess:+.2%}")
    return bool(pe < 30 and surprise > 0 and excess > 0)
