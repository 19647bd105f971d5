# puter-gateway: one image, served by uvicorn on $PORT; migrations run on start.

# The portal's chart library, from the npm registry exactly as package-lock.json says.
FROM node:20-slim AS assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/data \
    PORT=8000 \
    WORKERS=2

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
COPY --from=assets /assets/node_modules ./node_modules
# Placeholders keep the build from generating secrets into the image.
RUN DJANGO_SECRET_KEY=build-only-placeholder-not-a-secret-0123456789 \
    TOKEN_ENCRYPTION_KEY=build-only-placeholder VAR_DIR=/tmp/build \
    python manage.py collectstatic --noinput -v0 && rm -rf /tmp/build

RUN useradd --system gateway && mkdir -p /data && chown gateway /data
USER gateway
VOLUME ["/data"]
EXPOSE 8000

CMD ["sh", "-c", "python manage.py migrate --noinput -v0 && python manage.py bootstrap && exec uvicorn project.asgi:application --host 0.0.0.0 --port ${PORT} --workers ${WORKERS} --no-access-log --proxy-headers"]
