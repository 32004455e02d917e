"""Raw-data style: a symbol passes when its last close is above its 50-bar average."""


def classify_symbol(symbol):
    data = get_price_data(symbol, "1d", days=365)
    average = data["close"].rolling(50).mean().iloc[-1]
    log(f"close {data['close'].iloc[-1]:.2f}, 50-bar average {average:.2f}")
    return bool(data["close"].iloc[-1] > average)
