"""The `freshrec` command: above the services, it starts them and hands the library URLs.

`app` is the root (the console script); each subcommand group lives in the module named
for its job. Only this package knows where the checkout is (`paths.checkout_dir`).
"""
