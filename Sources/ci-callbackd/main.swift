print("ci-callbackd")
