"""argon2id's lowest cost, for every wac a test runs (in process or as a
program): tests' passwords are in the code and protect nothing, and a hash
or a check then takes a millisecond instead of a fifth of a second, over
hundreds of subscribers and logins a run. tests/identity/test_passwords.py
checks the default cost on its own."""

TEST_ARGON2 = {
    "WAC_IDENTITY_ARGON2_TIME_COST": "1",
    "WAC_IDENTITY_ARGON2_MEMORY_KIB": "64",
    "WAC_IDENTITY_ARGON2_PARALLELISM": "1",
}
