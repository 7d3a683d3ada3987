"""The browser side: the Dash app, its shell, pages, widgets and JSON API."""
