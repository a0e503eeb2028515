# The example shop (examples/shop) served by gunicorn under opentelemetry-instrument, with this
# package installed from the checkout. Used by docker-compose.yml; on its own:
#   docker build -t wide-events-shop . && docker run --rm -p 127.0.0.1:8000:8000 \
#     -e OTEL_TRACES_EXPORTER=wide_events_console -e OTEL_METRICS_EXPORTER=none \
#     -e OTEL_LOGS_EXPORTER=none wide-events-shop
FROM python:3.12.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# Brings gunicorn, Django, the OpenTelemetry SDK, the OTLP exporters and opentelemetry-instrument.
RUN pip install . && useradd --create-home --uid 10001 shop

# DJANGO_SETTINGS_MODULE must be set before opentelemetry-instrument starts gunicorn.
# settings_docker is shop.settings with ALLOWED_HOSTS from SHOP_ALLOWED_HOSTS.
ENV PYTHONPATH=/src/examples \
    DJANGO_SETTINGS_MODULE=shop.settings_docker
WORKDIR /src/examples
USER shop
EXPOSE 8000

# A short --timeout so that /slow/?seconds=10 shows a timeout event.
CMD ["opentelemetry-instrument", "gunicorn", "shop.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--timeout", "5"]
