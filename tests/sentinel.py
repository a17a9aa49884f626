"""The token every test uses, so that a leak anywhere in a test session can be found."""

SENTINEL_TOKEN = "sentinel0token0auth0c0ffee0d00d0"  # 32 chars, like a Matomo token
