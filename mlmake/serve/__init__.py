"""`mlmake serve`: published pipelines over HTTP, schedules and the page (app.py is the only
module that imports the web framework)."""
