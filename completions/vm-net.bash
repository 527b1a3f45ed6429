_vm__net() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="vm__net"
                ;;
            vm__net,addr)
                cmd="vm__net__subcmd__addr"
                ;;
            vm__net,bridge)
                cmd="vm__net__subcmd__bridge"
                ;;
            vm__net,help)
                cmd="vm__net__subcmd__help"
                ;;
            vm__net,link)
                cmd="vm__net__subcmd__link"
                ;;
            vm__net,list)
                cmd="vm__net__subcmd__list"
                ;;
            vm__net,mac)
                cmd="vm__net__subcmd__mac"
                ;;
            vm__net,ovs)
                cmd="vm__net__subcmd__ovs"
                ;;
            vm__net,tap)
                cmd="vm__net__subcmd__tap"
                ;;
            vm__net__subcmd__bridge,add)
                cmd="vm__net__subcmd__bridge__subcmd__add"
                ;;
            vm__net__subcmd__bridge,attach)
                cmd="vm__net__subcmd__bridge__subcmd__attach"
                ;;
            vm__net__subcmd__bridge,del)
                cmd="vm__net__subcmd__bridge__subcmd__del"
                ;;
            vm__net__subcmd__bridge,detach)
                cmd="vm__net__subcmd__bridge__subcmd__detach"
                ;;
            vm__net__subcmd__bridge,help)
                cmd="vm__net__subcmd__bridge__subcmd__help"
                ;;
            vm__net__subcmd__bridge,list)
                cmd="vm__net__subcmd__bridge__subcmd__list"
                ;;
            vm__net__subcmd__bridge__subcmd__help,add)
                cmd="vm__net__subcmd__bridge__subcmd__help__subcmd__add"
                ;;
            vm__net__subcmd__bridge__subcmd__help,attach)
                cmd="vm__net__subcmd__bridge__subcmd__help__subcmd__attach"
                ;;
            vm__net__subcmd__bridge__subcmd__help,del)
                cmd="vm__net__subcmd__bridge__subcmd__help__subcmd__del"
                ;;
            vm__net__subcmd__bridge__subcmd__help,detach)
                cmd="vm__net__subcmd__bridge__subcmd__help__subcmd__detach"
                ;;
            vm__net__subcmd__bridge__subcmd__help,help)
                cmd="vm__net__subcmd__bridge__subcmd__help__subcmd__help"
                ;;
            vm__net__subcmd__bridge__subcmd__help,list)
                cmd="vm__net__subcmd__bridge__subcmd__help__subcmd__list"
                ;;
            vm__net__subcmd__help,addr)
                cmd="vm__net__subcmd__help__subcmd__addr"
                ;;
            vm__net__subcmd__help,bridge)
                cmd="vm__net__subcmd__help__subcmd__bridge"
                ;;
            vm__net__subcmd__help,help)
                cmd="vm__net__subcmd__help__subcmd__help"
                ;;
            vm__net__subcmd__help,link)
                cmd="vm__net__subcmd__help__subcmd__link"
                ;;
            vm__net__subcmd__help,list)
                cmd="vm__net__subcmd__help__subcmd__list"
                ;;
            vm__net__subcmd__help,mac)
                cmd="vm__net__subcmd__help__subcmd__mac"
                ;;
            vm__net__subcmd__help,ovs)
                cmd="vm__net__subcmd__help__subcmd__ovs"
                ;;
            vm__net__subcmd__help,tap)
                cmd="vm__net__subcmd__help__subcmd__tap"
                ;;
            vm__net__subcmd__help__subcmd__bridge,add)
                cmd="vm__net__subcmd__help__subcmd__bridge__subcmd__add"
                ;;
            vm__net__subcmd__help__subcmd__bridge,attach)
                cmd="vm__net__subcmd__help__subcmd__bridge__subcmd__attach"
                ;;
            vm__net__subcmd__help__subcmd__bridge,del)
                cmd="vm__net__subcmd__help__subcmd__bridge__subcmd__del"
                ;;
            vm__net__subcmd__help__subcmd__bridge,detach)
                cmd="vm__net__subcmd__help__subcmd__bridge__subcmd__detach"
                ;;
            vm__net__subcmd__help__subcmd__bridge,list)
                cmd="vm__net__subcmd__help__subcmd__bridge__subcmd__list"
                ;;
            vm__net__subcmd__help__subcmd__ovs,bridge)
                cmd="vm__net__subcmd__help__subcmd__ovs__subcmd__bridge"
                ;;
            vm__net__subcmd__help__subcmd__ovs,port)
                cmd="vm__net__subcmd__help__subcmd__ovs__subcmd__port"
                ;;
            vm__net__subcmd__help__subcmd__ovs__subcmd__bridge,add)
                cmd="vm__net__subcmd__help__subcmd__ovs__subcmd__bridge__subcmd__add"
                ;;
            vm__net__subcmd__help__subcmd__ovs__subcmd__bridge,del)
                cmd="vm__net__subcmd__help__subcmd__ovs__subcmd__bridge__subcmd__del"
                ;;
            vm__net__subcmd__help__subcmd__ovs__subcmd__port,add)
                cmd="vm__net__subcmd__help__subcmd__ovs__subcmd__port__subcmd__add"
                ;;
            vm__net__subcmd__help__subcmd__ovs__subcmd__port,del)
                cmd="vm__net__subcmd__help__subcmd__ovs__subcmd__port__subcmd__del"
                ;;
            vm__net__subcmd__help__subcmd__tap,add)
                cmd="vm__net__subcmd__help__subcmd__tap__subcmd__add"
                ;;
            vm__net__subcmd__help__subcmd__tap,del)
                cmd="vm__net__subcmd__help__subcmd__tap__subcmd__del"
                ;;
            vm__net__subcmd__ovs,bridge)
                cmd="vm__net__subcmd__ovs__subcmd__bridge"
                ;;
            vm__net__subcmd__ovs,help)
                cmd="vm__net__subcmd__ovs__subcmd__help"
                ;;
            vm__net__subcmd__ovs,port)
                cmd="vm__net__subcmd__ovs__subcmd__port"
                ;;
            vm__net__subcmd__ovs__subcmd__bridge,add)
                cmd="vm__net__subcmd__ovs__subcmd__bridge__subcmd__add"
                ;;
            vm__net__subcmd__ovs__subcmd__bridge,del)
                cmd="vm__net__subcmd__ovs__subcmd__bridge__subcmd__del"
                ;;
            vm__net__subcmd__ovs__subcmd__bridge,help)
                cmd="vm__net__subcmd__ovs__subcmd__bridge__subcmd__help"
                ;;
            vm__net__subcmd__ovs__subcmd__bridge__subcmd__help,add)
                cmd="vm__net__subcmd__ovs__subcmd__bridge__subcmd__help__subcmd__add"
                ;;
            vm__net__subcmd__ovs__subcmd__bridge__subcmd__help,del)
                cmd="vm__net__subcmd__ovs__subcmd__bridge__subcmd__help__subcmd__del"
                ;;
            vm__net__subcmd__ovs__subcmd__bridge__subcmd__help,help)
                cmd="vm__net__subcmd__ovs__subcmd__bridge__subcmd__help__subcmd__help"
                ;;
            vm__net__subcmd__ovs__subcmd__help,bridge)
                cmd="vm__net__subcmd__ovs__subcmd__help__subcmd__bridge"
                ;;
            vm__net__subcmd__ovs__subcmd__help,help)
                cmd="vm__net__subcmd__ovs__subcmd__help__subcmd__help"
                ;;
            vm__net__subcmd__ovs__subcmd__help,port)
                cmd="vm__net__subcmd__ovs__subcmd__help__subcmd__port"
                ;;
            vm__net__subcmd__ovs__subcmd__help__subcmd__bridge,add)
                cmd="vm__net__subcmd__ovs__subcmd__help__subcmd__bridge__subcmd__add"
                ;;
            vm__net__subcmd__ovs__subcmd__help__subcmd__bridge,del)
                cmd="vm__net__subcmd__ovs__subcmd__help__subcmd__bridge__subcmd__del"
                ;;
            vm__net__subcmd__ovs__subcmd__help__subcmd__port,add)
                cmd="vm__net__subcmd__ovs__subcmd__help__subcmd__port__subcmd__add"
                ;;
            vm__net__subcmd__ovs__subcmd__help__subcmd__port,del)
                cmd="vm__net__subcmd__ovs__subcmd__help__subcmd__port__subcmd__del"
                ;;
            vm__net__subcmd__ovs__subcmd__port,add)
                cmd="vm__net__subcmd__ovs__subcmd__port__subcmd__add"
                ;;
            vm__net__subcmd__ovs__subcmd__port,del)
                cmd="vm__net__subcmd__ovs__subcmd__port__subcmd__del"
                ;;
            vm__net__subcmd__ovs__subcmd__port,help)
                cmd="vm__net__subcmd__ovs__subcmd__port__subcmd__help"
                ;;
            vm__net__subcmd__ovs__subcmd__port__subcmd__help,add)
                cmd="vm__net__subcmd__ovs__subcmd__port__subcmd__help__subcmd__add"
                ;;
            vm__net__subcmd__ovs__subcmd__port__subcmd__help,del)
                cmd="vm__net__subcmd__ovs__subcmd__port__subcmd__help__subcmd__del"
                ;;
            vm__net__subcmd__ovs__subcmd__port__subcmd__help,help)
                cmd="vm__net__subcmd__ovs__subcmd__port__subcmd__help__subcmd__help"
                ;;
            vm__net__subcmd__tap,add)
                cmd="vm__net__subcmd__tap__subcmd__add"
                ;;
            vm__net__subcmd__tap,del)
                cmd="vm__net__subcmd__tap__subcmd__del"
                ;;
            vm__net__subcmd__tap,help)
                cmd="vm__net__subcmd__tap__subcmd__help"
                ;;
            vm__net__subcmd__tap__subcmd__help,add)
                cmd="vm__net__subcmd__tap__subcmd__help__subcmd__add"
                ;;
            vm__net__subcmd__tap__subcmd__help,del)
                cmd="vm__net__subcmd__tap__subcmd__help__subcmd__del"
                ;;
            vm__net__subcmd__tap__subcmd__help,help)
                cmd="vm__net__subcmd__tap__subcmd__help__subcmd__help"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        vm__net)
            opts="-h -V --json --help --version bridge tap link addr mac list ovs help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__addr)
            opts="-h --json --help add del"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge)
            opts="-h --json --help add del list attach detach help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__add)
            opts="-h --may-exist --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__attach)
            opts="-h --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__del)
            opts="-h --if-exists --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__detach)
            opts="-h --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__help)
            opts="add del list attach detach help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__help__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__help__subcmd__attach)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__help__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__help__subcmd__detach)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__help__subcmd__list)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__bridge__subcmd__list)
            opts="-h --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help)
            opts="bridge tap link addr mac list ovs help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__addr)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__bridge)
            opts="add del list attach detach"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__bridge__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__bridge__subcmd__attach)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__bridge__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__bridge__subcmd__detach)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__bridge__subcmd__list)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__link)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__list)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__mac)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__ovs)
            opts="bridge port"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__ovs__subcmd__bridge)
            opts="add del"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__ovs__subcmd__bridge__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__ovs__subcmd__bridge__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__ovs__subcmd__port)
            opts="add del"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__ovs__subcmd__port__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__ovs__subcmd__port__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__tap)
            opts="add del"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__tap__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__help__subcmd__tap__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__link)
            opts="-h --json --help up down"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__list)
            opts="-h --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__mac)
            opts="-h --name --index --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --name)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --index)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs)
            opts="-h --json --help bridge port help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__bridge)
            opts="-h --json --help add del help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__bridge__subcmd__add)
            opts="-h --may-exist --datapath --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --datapath)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__bridge__subcmd__del)
            opts="-h --if-exists --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__bridge__subcmd__help)
            opts="add del help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__bridge__subcmd__help__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__bridge__subcmd__help__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__bridge__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__help)
            opts="bridge port help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__help__subcmd__bridge)
            opts="add del"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__help__subcmd__bridge__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__help__subcmd__bridge__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__help__subcmd__port)
            opts="add del"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__help__subcmd__port__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__help__subcmd__port__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__port)
            opts="-h --json --help add del help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__port__subcmd__add)
            opts="-h --may-exist --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__port__subcmd__del)
            opts="-h --if-exists --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__port__subcmd__help)
            opts="add del help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__port__subcmd__help__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__port__subcmd__help__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__ovs__subcmd__port__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 5 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__tap)
            opts="-h --json --help add del help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__tap__subcmd__add)
            opts="-h --bridge --owner --queues --may-exist --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --bridge)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --owner)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --queues)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__tap__subcmd__del)
            opts="-h --if-exists --json --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__tap__subcmd__help)
            opts="add del help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__tap__subcmd__help__subcmd__add)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__tap__subcmd__help__subcmd__del)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__net__subcmd__tap__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _vm__net -o nosort -o bashdefault -o default vm-net
else
    complete -F _vm__net -o bashdefault -o default vm-net
fi
