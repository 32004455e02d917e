# A scheduled deployment's strategy: a plain `env` value and a `secret`, both read-only
# (README, "Schedules, environment and secrets"). The secret is redacted from its logs.
def strategy(data):
    key = secrets["BROKER_KEY"]
    log("mode", env["MODE"], "key set:", bool(key))
    fast = data["close"].rolling(5).mean().iloc[-1]
    slow = data["close"].rolling(20).mean().iloc[-1]
    return "BUY" if fast > slow else "SELL"
