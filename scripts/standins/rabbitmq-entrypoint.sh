#!/bin/sh
# Entrypoint of the offline rabbitmq stand-in (docs/offline-images.md), keeping the official image's contract:
# RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS / RABBITMQ_DEFAULT_VHOST make that user (administrator, every
# permission on that vhost) on first boot instead of guest. Without them guest/guest may log in from anywhere, as
# the official image's loopback_users.guest = false allows. Logs go to the console (`docker logs`).
set -eu
conf_dir=/etc/rabbitmq
# Erlang binary strings: escape backslash and double quote, so any password survives.
erl_bin() { printf '<<"%s"/utf8>>' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }
{
  echo "loopback_users.guest = false"
  echo "listeners.tcp.default = 5672"
  echo "management.tcp.port = 15672"
  echo "log.console = true"
  echo "log.console.level = info"
  echo "log.file = false"
} >"$conf_dir/rabbitmq.conf"
# advanced.config, not rabbitmq.conf: its values are quoted terms, so no character of a password needs care.
{
  printf '[{rabbit, ['
  sep=""
  if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
    printf '{default_user, %s}, {default_user_tags, [administrator]}' "$(erl_bin "$RABBITMQ_DEFAULT_USER")"; sep=", "
  fi
  if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then printf '%s{default_pass, %s}' "$sep" "$(erl_bin "$RABBITMQ_DEFAULT_PASS")"; sep=", "; fi
  if [ -n "${RABBITMQ_DEFAULT_VHOST:-}" ]; then printf '%s{default_vhost, %s}' "$sep" "$(erl_bin "$RABBITMQ_DEFAULT_VHOST")"; sep=", "; fi
  printf '%s{default_permissions, [<<".*">>, <<".*">>, <<".*">>]}]}].\n' "$sep"
} >"$conf_dir/advanced.config"
chown rabbitmq:rabbitmq "$conf_dir/rabbitmq.conf" "$conf_dir/advanced.config"
chmod 600 "$conf_dir/rabbitmq.conf" "$conf_dir/advanced.config"
# The server must not see the secrets in its environment as well (docker inspect shows them anyway, as upstream).
unset RABBITMQ_DEFAULT_USER RABBITMQ_DEFAULT_PASS RABBITMQ_DEFAULT_VHOST
# The data directory may be a fresh volume owned by root.
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq 2>/dev/null || true
if [ "$#" -eq 0 ] || [ "$1" = rabbitmq-server ]; then
  [ "$#" -eq 0 ] || shift
  # PID 1 becomes RabbitMQ's own start script as the rabbitmq user; it traps SIGTERM and stops the node cleanly.
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
