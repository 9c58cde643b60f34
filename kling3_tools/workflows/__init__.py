"""What runs over time: spending (reserve, send, settle), the poller and its schedule, finishing and delivery
to notifiers, and story runs. Built on `domain` and `adapters`; reached by front ends only through
`KlingService`."""
