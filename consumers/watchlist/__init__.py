"""The watch list (预警清单): where alerts become entries a duty officer works through.

``models`` holds the tables, ``service`` the operations (keyword-only functions), ``views``
the web pages and ``export`` the CSV download. The alert sink calls
``service.record_alerts``; ``views.create_app(engine=...)`` serves the pages.
"""
