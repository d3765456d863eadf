"""The request pipeline: route, then the stages composed per route when the config loads."""
