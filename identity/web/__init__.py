"""Every hosted page: sign-in, account, device, the authorize interaction and end session."""
