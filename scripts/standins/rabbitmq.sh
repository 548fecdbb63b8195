# The RabbitMQ stand-in (sourced by scripts/ensure-base-image.sh after common.sh; docs/offline-images.md): Debian
# $SUITE's rabbitmq-server with the management plugin, behind an entrypoint with the official image's contract.
# shellcheck shell=bash

# build_rabbitmq TAG...: the stand-in from the shared base rootfs, tagged TAG...
build_rabbitmq() {
  local dir="$WORK/rabbitmq" build="grokemu-standin/rabbitmq:build-$$"
  chroot_install "$dir" rabbitmq rabbitmq-server
  if compgen -G "$dir/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_management-*" >/dev/null; then
    echo '[rabbitmq_management].' >"$dir/etc/rabbitmq/enabled_plugins"
    say "rabbitmq_management plugin enabled (port 15672)"
  else
    say "Debian's rabbitmq-server has no rabbitmq_management plugin: AMQP only (docs/offline-images.md)"
  fi
  install -m 0755 "$REPO/scripts/standins/rabbitmq-entrypoint.sh" "$dir/usr/local/bin/docker-entrypoint.sh"
  # Every container makes its own Erlang cookie and database on first boot, as with the official image.
  rm -rf "$dir"/var/lib/rabbitmq/.erlang.cookie "$dir"/var/lib/rabbitmq/mnesia "$dir"/var/log/rabbitmq/*
  finish_rootfs "$dir"
  import_rootfs "$dir" "$build" 'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["rabbitmq-server"]' \
    'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'ENV LANG=C.UTF-8' \
    'ENV HOME=/var/lib/rabbitmq' 'VOLUME /var/lib/rabbitmq' \
    'EXPOSE 4369 5671 5672 15671 15672 25672'
  rm -rf "$dir"
  verify_rabbitmq "$build"
  tag_standin "$build" "$@"
  docker image rm "$build" >/dev/null
}

# verify_rabbitmq IMAGE: the node boots and answers the healthcheck Datagrok's compose uses.
verify_rabbitmq() {
  local name="grokemu-standin-verify-$$" deadline t0
  t0=$(date +%s); deadline=$(( t0 + 180 ))
  docker run -d --name "$name" --label grokemu.standin-verify=1 --network none \
    -e RABBITMQ_DEFAULT_USER=verify -e RABBITMQ_DEFAULT_PASS=verify "$1" >/dev/null
  until docker exec "$name" rabbitmq-diagnostics -q ping >/dev/null 2>&1; do
    if [[ "$(docker inspect -f '{{.State.Running}}' "$name")" != true ]] || (( $(date +%s) > deadline )); then
      docker logs --tail 30 "$name" >&2 || true; docker rm -f "$name" >/dev/null
      die "$1: rabbitmq did not answer rabbitmq-diagnostics -q ping"
    fi
    sleep 1
  done
  docker rm -f "$name" >/dev/null
  say "verified: rabbitmq-diagnostics -q ping answers ($(since "$t0")s)"
}
