"""The rules about people: signup, verification, login, recovery, profile, operators' actions,
passwords and browser sessions. No HTML, no HTTP: every surface calls these."""
