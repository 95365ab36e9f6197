"""`python -m driver`: the reference DRA driver for GPU sharing by memory."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from kubernetes.client.rest import ApiException
from urllib3.exceptions import MaxRetryError

from driver.checkpoint import CheckpointError
from driver.config import Config, ConfigError, parse_config
from driver.inventory import InventoryError, load_inventory
from driver.kube import ApiCallError, ClaimLister, ClaimReader, api_client
from driver.metrics import Metrics
from driver.plugin import KubeletPlugin
from driver.publisher import DroppedFieldsError, SlicePublisher
from driver.slices import PublishSettings, SlicePolicyError
from driver.state import DeviceState

log = logging.getLogger("driver")

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def run(cfg: Config) -> int:
    inventory = load_inventory(cfg.gpus, cfg.node_name)
    for gpu in inventory.gpus:
        log.info(
            "%s %s: %s, %d bytes, %s",
            inventory.source,
            gpu.device_name,
            gpu.product_name,
            gpu.memory_bytes,
            gpu.uuid,
        )
    api = api_client(cfg.kubeconfig)
    state = DeviceState(
        driver_name=cfg.driver_name,
        node_name=cfg.node_name,
        inventory=inventory,
        cdi_dir=cfg.cdi_dir,
        state_dir=cfg.state_dir,
        read_claim=ClaimReader(api),
        list_claims=ClaimLister(api),
    )
    state.restore()

    stop = threading.Event()
    fatal: list[BaseException] = []

    def on_fatal(err: BaseException) -> None:
        fatal.append(err)
        stop.set()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    settings = PublishSettings(
        node_name=cfg.node_name,
        driver_name=cfg.driver_name,
        sharing=cfg.sharing,
        memory_policy=cfg.memory_policy,
        memory_min=cfg.memory_min,
        memory_step=cfg.memory_step,
    )
    publisher = SlicePublisher(api, inventory.gpus, settings, on_fatal=on_fatal)
    publisher.publish()  # fails fast (before registering) when the server drops the sharing fields

    metrics = Metrics()
    metrics.prepared.set(state.prepared_count())
    plugin = KubeletPlugin(state, metrics, cfg.driver_name, cfg.dra_socket, cfg.registration_socket)
    try:
        plugin.start()
        publisher.start_watching()
        if cfg.metrics_port:
            metrics.serve(cfg.metrics_address, cfg.metrics_port)
        log.info("driver %s ready on node %s", cfg.driver_name, cfg.node_name)
        stop.wait()
    finally:
        publisher.stop_watching()
        plugin.stop()
        metrics.close()
        if cfg.remove_slices_on_exit and not fatal:
            publisher.remove_all()
        api.close()
    if fatal:
        log.error("stopped: %s", fatal[0])
        return EXIT_RUNTIME
    log.info("stopped cleanly")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as err:
        print(f"driver: {err}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=cfg.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return run(cfg)
    except (ConfigError, InventoryError, SlicePolicyError, CheckpointError) as err:
        log.error("%s", err)
        return EXIT_CONFIG
    except (DroppedFieldsError, ApiCallError, OSError) as err:
        log.error("%s", err)
        return EXIT_RUNTIME
    except ApiException as err:
        log.error("the API server refused a call: HTTP %s %s: %s", err.status, err.reason, err.body)
        return EXIT_RUNTIME
    except MaxRetryError as err:
        log.error("the API server is unreachable: %s", err.reason)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
