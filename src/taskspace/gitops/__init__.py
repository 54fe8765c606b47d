"""Host-side git: bare mirrors per remote, credentials through a helper, rescue pushes.

The server is the only place that talks to git remotes. Workspaces clone from a read-only
mirror and never see a token.
"""
