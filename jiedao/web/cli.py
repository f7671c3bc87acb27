"""``jiedao serve``: run the web application with uvicorn."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``jiedao`` CLI."""

    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", help="监听地址（默认仅本机）"),
        port: int = typer.Option(8000, help="端口"),
        workers: int = typer.Option(1, min=1, max=64,
                                    help="工作进程数（多核服务器上一般取 CPU 核数）"),
        access_log: bool = typer.Option(True, help="每个请求写一行访问日志（前面有反向代理记日志时可关闭）"),
        reload: bool = typer.Option(False, help="代码变动时自动重启（开发用）"),
        sla_sweep: float = typer.Option(5.0, "--sla-sweep", min=0,
                                        help="每隔多少分钟巡检工单时限（预警与超时）；0 关闭"),
    ) -> None:
        """Upgrade the schema, then serve the web UI and API (http://HOST:PORT).

        With ``--workers N`` uvicorn runs N processes on one socket, each building the app
        (and its case pipeline) once; the schema is upgraded here, once, before they start.
        The SLA sweep (:class:`jiedao.cases.sla.SweepScheduler`) runs in this process, once
        per server whatever the number of workers.
        """
        import uvicorn

        from jiedao.db import get_database

        get_database().upgrade()
        if sla_sweep > 0 and not reload:
            from jiedao.cases.sla import SweepScheduler

            SweepScheduler(get_database(), sla_sweep * 60).start()
        typer.echo(f"Jiedao 数字街道: http://{host}:{port}/  (接口文档 /docs)"
                   + (f"  ×{workers} 进程" if workers > 1 else ""))
        if reload:
            uvicorn.run("jiedao.web.app:create_app", factory=True, host=host, port=port,
                        reload=True, reload_dirs=["jiedao"])
        elif workers > 1:
            uvicorn.run("jiedao.web.app:create_app", factory=True, host=host, port=port,
                        workers=workers, log_level="info", access_log=access_log)
        else:
            from jiedao.web.app import create_app

            uvicorn.run(create_app(), host=host, port=port, log_level="info",
                        access_log=access_log)
