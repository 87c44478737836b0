"""The aiohttp entrypoint: routes, the request context, request bodies."""
