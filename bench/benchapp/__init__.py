"""The Django app that ``bench/throughput.py`` serves: a hello-world view and a cheap DB view."""
