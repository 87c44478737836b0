"""The aiohttp entrypoint: routes, middlewares, request bodies."""
